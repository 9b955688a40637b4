"""What every adapter on the wire shares: its helper threads, its errors mapped, server-sent events read from a
body, sentences handed on as written.

Both model APIs stream as server-sent events (``data: {...}`` lines), and a
phone turn wants each sentence said the moment the model has finished it. The
adapters differ only in what an event means; reading the lines, handing on
sentences and mapping the wire's failures is done once, here.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Iterable, Iterator

from ..exceptions import LLMError, LLMTimeout, LLMUnavailable
from ..speakable import complete_sentences
from ..wire import WireError, WireTimeout
from .base import OnText

# The most a stream may hold that is not yet a whole line, or a whole event: a model's event is a few
# hundred bytes; past this it is not a model talking, and the stream fails as a broken one does.
MAX_PENDING_BYTES = 256 * 1024


class StreamBroken(Exception):
    """The stream is not one a model sends (a line too long, an event that is not JSON)."""


class NotSaid(Exception):
    """What ``on_text`` raised (the platform failed to say it), carried past the mapping of the model's
    errors unchanged."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class HelperPool:
    """The threads an adapter's wire opens connections on (a name lookup takes no timeout), or its SDK's calls
    run on: made on first use, in the worker process (a pool's threads do not survive a fork)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def __call__(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.size, thread_name_prefix="llm")
            return self._pool

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


@contextmanager
def wire_errors(model: str, timeout: float) -> Iterator[None]:
    """The wire's failures and a broken stream as the model's: a timeout, or the model unavailable."""
    try:
        yield
    except (LLMError, NotSaid):
        raise
    except WireTimeout:
        raise LLMTimeout(f"{model}: no reply within {timeout:.1f}s") from None
    except (WireError, StreamBroken) as exc:
        raise LLMUnavailable(f"{model}: {exc}") from None


def events(chunks: Iterable[bytes]) -> Iterator[list[Any]]:
    """For each chunk read, the JSON events of the ``data:`` lines it completed (``[DONE]`` as the string
    ``"[DONE]"``), so that what one read brought is handled together."""
    pending = b""
    for chunk in chunks:
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()  # the start of a line the next read completes
        if len(pending) > MAX_PENDING_BYTES:
            raise StreamBroken(f"a stream line longer than {MAX_PENDING_BYTES} bytes")
        read = []
        for line in lines:
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                read.append("[DONE]")
                continue
            try:
                read.append(json.loads(data))
            except ValueError:
                raise StreamBroken("a stream event that is not JSON") from None
        yield read


class Sentences:
    """A reply's words as the model writes them, handed to ``on_text`` a run of whole sentences at a time."""

    def __init__(self, on_text: OnText) -> None:
        self.on_text = on_text
        self.said: list[str] = []
        self._buffer = ""
        self._ready: list[str] = []

    def add(self, words: str) -> None:
        self._buffer += words
        whole, self._buffer = complete_sentences(self._buffer)
        if whole:
            self._ready.append(whole)

    def hand_on(self) -> bool:
        """Say what is ready (one piece for what one read finished); False when the caller stopped the reply."""
        if not self._ready:
            return True
        piece, self._ready = "".join(self._ready), []
        self.said.append(piece)
        return self._say(piece)

    def finish(self) -> None:
        """The stream ended: what is left, sentence or not, is said too."""
        self.hand_on()
        if self._buffer.strip():
            self.said.append(self._buffer)
            self._say(self._buffer)
            self._buffer = ""

    @property
    def text(self) -> str:
        return "".join(self.said)

    def _say(self, piece: str) -> bool:
        try:
            return self.on_text(piece)
        except Exception as exc:
            raise NotSaid(exc) from exc

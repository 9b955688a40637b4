"""What every model adapter shares: its requests' failures and refusals mapped to voicebot's, server-sent events
read from a body, sentences handed on as written.

Both model APIs stream as server-sent events (``data: {...}`` lines), and a
phone turn wants each sentence said the moment the model has finished it. The
adapters differ only in what an event means; reading the lines, handing on
sentences and mapping the egress layer's failures is done once, here.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Any, Iterable, Iterator

from ..egress import BodyTooLarge, EgressError, EgressTimeout
from ..exceptions import LLMError, LLMKeyRejected, LLMRejected, LLMTimeout, LLMUnavailable
from ..speakable import complete_sentences
from .base import OnText

# The most a stream may hold that is not yet a whole line, or a whole event: a model's event is a few
# hundred bytes; past this it is not a model talking, and the stream fails as a broken one does.
MAX_PENDING_BYTES = 256 * 1024
# The most of a reply held back waiting for a sentence to end: past it, what is there is said as it is (a
# spoken sentence is a few hundred characters; scanning an ever longer one for its end costs every event).
MAX_UNFINISHED_CHARS = 2000
# The most a model's answer may be, streamed or whole: a spoken reply is a few kB, an analysis some more;
# past this it is not a model answering, and the turn falls back rather than hold the bytes.
MAX_ANSWER_BYTES = 4 * 1024 * 1024
# An error's body is read for its message, no further.
MAX_ERROR_BYTES = 64 * 1024
# Statuses that say the request was not served (rate limited, overloaded).
NOT_SERVED = {429, 500, 502, 503, 504, 529}


class StreamBroken(Exception):
    """The stream is not one a model sends (a line too long, an event that is not JSON)."""


class NotSaid(Exception):
    """What ``on_text`` raised (the platform failed to say it), carried past the mapping of the model's
    errors unchanged."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


@contextmanager
def request_errors(model: str, timeout: float) -> Iterator[None]:
    """A request's failures and a broken stream as the model's: a timeout, or the model unavailable (an
    answer past its cap included: the turn falls back, and the record says why)."""
    try:
        yield
    except (LLMError, NotSaid):
        raise
    except EgressTimeout:
        raise LLMTimeout(f"{model}: no reply within {timeout:.1f}s") from None
    except BodyTooLarge as exc:
        raise LLMUnavailable(f"{model}: {exc}") from None
    except (EgressError, StreamBroken) as exc:
        raise LLMUnavailable(f"{model}: {exc}") from None
    except ValueError:
        raise LLMUnavailable(f"{model}: the answer is not JSON") from None


def status_error(model: str, status: int, body: bytes) -> LLMError:
    """A status other than 200 as voicebot's error, with the API's own message where it gave one (both APIs
    answer ``{"error": {"message": ...}}``, Anthropic's with a ``type`` too)."""
    try:
        error = json.loads(body[:MAX_ERROR_BYTES]).get("error")
    except (ValueError, AttributeError, UnicodeDecodeError):
        error = None
    message = error.get("message") if isinstance(error, dict) else error
    detail = f"{model}: HTTP {status}" + (f" ({str(message)[:200]})" if message else "")
    if status in (401, 403):
        return LLMKeyRejected(detail)
    if status in NOT_SERVED or status >= 500:
        return LLMUnavailable(detail)
    return LLMRejected(detail)  # 400 (a request it refuses), 404 (no such model), 413


def error_body(stream: Any) -> bytes:
    """The first MAX_ERROR_BYTES of an error answer: read for its message, never a reason to wait longer."""
    data = b""
    for piece in stream.pieces():
        data += piece
        if len(data) > MAX_ERROR_BYTES:
            break
    return data


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
    """A reply's words as the model writes them, handed to ``on_text`` a run of whole sentences at a time
    (``as_written``: what each read brought, whole or not)."""

    def __init__(self, on_text: OnText, as_written: bool = False) -> None:
        self.on_text = on_text
        self.as_written = as_written
        self.said: list[str] = []
        self._buffer = ""
        self._ready: list[str] = []

    def add(self, words: str) -> None:
        if self.as_written:
            if words:
                self._ready.append(words)
            return
        self._buffer += words
        whole, self._buffer = complete_sentences(self._buffer)
        if whole:
            self._ready.append(whole)
        if len(self._buffer) > MAX_UNFINISHED_CHARS:
            self._ready.append(self._buffer)
            self._buffer = ""

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

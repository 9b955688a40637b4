"""A WebSocket that carries JSON objects, one a message: the shape of every platform's call socket
(Twilio's and Telnyx's ConversationRelay, Retell's custom LLM).

What a peer can make it hold is bounded: the WebSocket layer (``voicebot.web.websocket``) bounds each
message's size and its own queue; a message that is not a JSON object of at most ``MAX_MESSAGE_CHARS``
is not handed on, and a socket that keeps sending what its platform never sends is closed after
``MAX_UNREADABLE`` of them, with one warning line, not one a message. Sends are serialised: a turn's
thread and the socket's reader may both write.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from typing import Any

from simple_websocket import ConnectionClosed  # type: ignore[import-untyped]

log = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 20_000
# Unreadable messages (not JSON objects, or not the platform's) a socket may send before it is closed.
MAX_UNREADABLE = 20


class JsonSocket:
    """One call's socket: JSON objects in and out; ``kind`` names it in the log ("relay", "retell")."""

    def __init__(self, ws: Any, kind: str) -> None:
        self.ws = ws
        self.kind = kind
        self.ended = False
        self.unreadable = 0
        self._sending = threading.Lock()
        # Text deltas are small frames sent one after another: without this, Nagle's algorithm holds one back
        # until the last is acknowledged, and delayed ACKs make that up to 40 ms.
        sock = getattr(ws, "sock", None)
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def send(self, message: dict[str, Any]) -> None:
        with self._sending:
            self.ws.send(json.dumps(message, separators=(",", ":")))

    def read(self, timeout: float) -> dict[str, Any] | None:
        """The next JSON object, or None after ``timeout`` seconds without one; ConnectionClosed when it closes."""
        while True:
            raw = self.ws.receive(timeout=timeout)
            if raw is None:
                return None
            message = _parse(raw)
            if message is not None:
                return message
            self.not_understood("unreadable (not a JSON object of at most %d characters)" % MAX_MESSAGE_CHARS)

    def not_understood(self, what: str) -> None:
        """A message not the platform's: the first is logged, the rest counted; too many close the socket."""
        self.unreadable += 1
        if self.unreadable == 1:
            log.warning("%s message %s; more such are counted, not logged", self.kind, what)
        if self.unreadable >= MAX_UNREADABLE:
            log.warning("%s closed: %d messages not understood", self.kind, self.unreadable)
            self.ws.close(reason=1008, message="messages not understood")
            raise ConnectionClosed(1008, "messages not understood")


def _parse(raw: Any) -> dict[str, Any] | None:
    """A message as a dict, or None for one that is not a JSON object of at most MAX_MESSAGE_CHARS."""
    if isinstance(raw, bytes) or len(raw) > MAX_MESSAGE_CHARS:
        return None
    try:
        message = json.loads(raw)
    except ValueError:
        return None
    return message if isinstance(message, dict) else None

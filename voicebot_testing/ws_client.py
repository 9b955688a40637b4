"""The platforms' side of a call socket: simple_websocket's client, keeping what came with the handshake.

simple_websocket's ``Client`` reads the server's 101 answer, takes the first
event from it and leaves any message that came in the same read in wsproto's
buffer until more bytes arrive. A server that speaks first (Retell's custom
LLM: voicebot sends ``config`` and the begin message at once) can then wait
for ever on a client that never sees them, now and then, by timing alone.
"""

from __future__ import annotations

from simple_websocket import Client as _Client  # type: ignore[import-untyped]
from simple_websocket import ConnectionClosed, ConnectionError  # noqa: F401

__all__ = ["Client", "ConnectionClosed", "ConnectionError"]


class Client(_Client):  # type: ignore[misc]
    """``simple_websocket.Client``, with the messages that came in the handshake's read handed on."""

    def handshake(self) -> None:
        super().handshake()
        self.connected = self._handle_events()  # the rest of that read: messages, or a close

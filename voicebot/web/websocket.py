"""WebSocket routes with limits: simple-websocket's server, bounded in what one message and the unread queue hold.

simple-websocket (over wsproto) does the protocol: the upgrade, framing,
permessage-deflate, ping and close. What it leaves unbounded by default is
what a peer can make a worker hold: a message of any size (a compressed frame
inflates before anything looks at it: a 1 MB frame became 2 GB) and any
number of messages waiting unread while the worker is busy with a turn. A
socket that passes either limit is closed (1009 too big, 1008 a flood): no
platform sends that.

flask-sock's route builds its server itself, with no say over that queue,
and upgrades before the view can refuse: ``accept`` is that step (the WSGI
hand-over is flask-sock's), with the bounded server in its place, called by
a view once it has checked the request.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from flask import Response, request
from simple_websocket import ConnectionClosed, Server  # type: ignore[import-untyped]
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import LocalProtocolError

log = logging.getLogger(__name__)

# A relay message is a few hundred bytes (a prompt, a key, an interrupt); a long prompt a few kB.
MAX_MESSAGE_BYTES = 64 * 1024
# Messages that may wait unread while a turn runs: a caller's words, keys and interrupts of one reply.
MAX_QUEUED_MESSAGES = 64


class BoundedServer(Server):  # type: ignore[misc]
    """simple-websocket's server socket, closed (1008) when more than ``max_queued`` messages wait unread."""

    def __init__(self, environ: dict[str, Any], *, max_message_size: int = MAX_MESSAGE_BYTES,
                 max_queued: int = MAX_QUEUED_MESSAGES) -> None:
        self.max_queued = max_queued
        self.flooded = False
        super().__init__(environ, max_message_size=max_message_size)

    def _handle_events(self) -> bool:
        # The reader thread's step, after each read from the socket: past the queue's bound it stops reading.
        keep_going: bool = super()._handle_events()
        if keep_going and len(self.input_buffer) > self.max_queued:
            self.flooded = True
            log.warning("WebSocket closed (1008): more than %d messages waiting unread", self.max_queued)
            try:
                self.close(reason=CloseReason.POLICY_VIOLATION, message="too many messages")
            except ConnectionClosed:
                pass
            self.event.set()
            return False
        return keep_going

    def close(self, reason: int | None = None, message: str | None = None) -> None:
        # The reader thread may have begun the close itself (a message too big) and not yet marked the
        # socket closed: wsproto then refuses a second close frame. That is a closed socket, not a fault.
        try:
            super().close(reason, message)
        except LocalProtocolError:
            self.connected = False
            raise ConnectionClosed(self.close_reason, self.close_message) from None


def accept(handler: Callable[[Any], None]) -> Response:
    """Take this request's WebSocket upgrade and run ``handler(ws)`` on a ``BoundedServer`` until it returns.

    A view checks what it must (signature, ticket, capacity) first and answers
    a refusal as any HTTP response, before anything is upgraded.
    """
    ws = BoundedServer(request.environ)
    try:
        handler(ws)
    except ConnectionClosed:
        pass
    try:
        ws.close()
    except ConnectionClosed:
        pass
    return _HandedOver(ws.mode)


class _HandedOver(Response):
    """The response after a WebSocket session: the server wrote everything itself; nothing more is sent.

    Under gunicorn the worker is told the connection is done (StopIteration, as
    flask-sock does); werkzeug's dev server takes the response as it is.
    """

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.mode == "gunicorn":
            raise StopIteration()
        if self.mode == "werkzeug":
            return super().__call__(*args, **kwargs)
        return []

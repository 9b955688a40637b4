"""A relay socket's handshake: the ticket its call's signed webhook put in its URL, taken under the call's
lock; then a slot of this worker's call sockets; then the upgrade. Any refusal is an HTTP answer: no
socket, no word, no model spent.

The ticket is what proves the socket (``voicebot.socket_ticket``): Twilio signs the handshake as well,
Telnyx does not, and for both a signature proves a request, not a call.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from flask import Response, g, request
from simple_websocket import ConnectionClosed  # type: ignore[import-untyped]

from .. import socket_ticket
from ..conversation import Conversation
from ..runtime import runtime
from ..web.errors import json_error
from ..web.websocket import accept as accept_websocket
from .session import serve

log = logging.getLogger(__name__)


def open_socket(conversation: Conversation, call_ids: re.Pattern[str]) -> Response:
    """The relay socket this request asks for (``?call=<id>&ticket=<ticket>``), served until it closes."""
    call_id = request.args.get("call", "")
    ticket = request.args.get("ticket", "")
    if not call_ids.fullmatch(call_id) or not socket_ticket.well_formed(ticket):
        return json_error(403, "invalid_ticket", "the socket's URL must name a call and its ticket, as /voice gave it")
    g.call_id = call_id
    redeemed = conversation.with_channel(call_id, lambda channel: socket_ticket.redeem(channel, ticket),
                                         wait=conversation.settings.lock_wait)
    if not redeemed:
        log.warning("relay refused call_id=%s: no such live call, or its ticket is spent or stale", call_id)
        return json_error(403, "invalid_ticket", "this call's socket is open already, or the call is not live")
    slots = runtime().socket_slots
    if not slots.acquire(blocking=False):
        # Given back: the platform may try again (Twilio's applicationReconnect) on an instance with room.
        conversation.with_channel(call_id, socket_ticket.hand_back, wait=conversation.settings.lock_wait)
        log.warning("relay refused call_id=%s: this worker holds MAX_SOCKET_CALLS sockets already", call_id)
        return json_error(503, "busy", "this worker holds MAX_SOCKET_CALLS call sockets already")
    draining = runtime().draining

    def session(ws: Any) -> None:
        try:
            serve(ws, conversation, call_id, draining)
        except ConnectionClosed:
            raise
        except Exception:
            log.exception("relay failed unexpectedly call_id=%s", call_id)

    try:
        return accept_websocket(session)
    finally:
        slots.release()

"""Telnyx's TeXML webhooks and its ConversationRelay socket.

``/voice`` (the TeXML application's voice URL) answers ``<Connect><ConversationRelay>`` with the greeting;
the socket's URL names the call and carries its ticket, given here by this signed webhook, because
Telnyx does not sign the handshake: a socket without a good ticket gets no word. The socket is then
ConversationRelay's session, shared with Twilio's (``voicebot.relay``). After ``end``, Telnyx asks
``/relay-end`` what comes next; ``/status`` (the status callback) ends the call and makes its record.
TeXML is TwiML: the answers are written with the same builder as Twilio's.
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import parse_qsl, urlencode

from flask import Blueprint, Response, current_app, g, request

from .. import socket_ticket
from ..conversation import Conversation
from ..deadline import RESPONSE_BUDGET, Deadline
from ..exceptions import InvalidEvent, StoreFull
from ..relay.handshake import open_socket
from ..runtime import runtime
from ..twilio.signature import websocket_url
from ..twilio.twiml import END_REASONS, Voice, how_it_ended, nothing
from ..web import conversation_of, raw_body
from ..web.errors import as_json_error, json_error
from ..web.validation import optional_text
from .signature import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify

log = logging.getLogger(__name__)

NAME = "telnyx"
bp = Blueprint(NAME, __name__, url_prefix="/webhook/telnyx")

# Telnyx's TeXML call ids: "v3:" (or v2:) and a URL-safe base64 id.
CALL_SID = re.compile(r"v[0-9]:[A-Za-z0-9_\-]{8,200}")
MAX_NUMBER_CHARS = 64
MAX_FORM_BYTES = 64 * 1024


def _state() -> dict[str, Any]:
    state: dict[str, Any] = runtime().platforms[NAME]
    return state


def _conversation() -> Conversation:
    return conversation_of(NAME)


def _twiml(body: str) -> Response:
    return Response(body, status=200, mimetype="text/xml")


def _fields() -> dict[str, str]:
    return dict(parse_qsl(raw_body(MAX_FORM_BYTES).decode("utf-8", "replace"), keep_blank_values=True))


def _call_sid(fields: dict[str, str]) -> str:
    sid = fields.get("CallSid", "")
    if not CALL_SID.fullmatch(sid):
        raise InvalidEvent("'CallSid' is missing or is not a Telnyx call id")
    g.call_id = sid
    return sid


@bp.before_request
def check_signature() -> Response | None:
    state = _state()
    if state.get("key") is None:
        return json_error(404, "telnyx_disabled", "/webhook/telnyx is off: set TELNYX_PUBLIC_KEY to the account's "
                                                  "public key")
    if request.endpoint == "telnyx.relay":
        return None  # Telnyx does not sign the handshake: the ticket its signed /voice gave is the proof
    body = raw_body(MAX_FORM_BYTES)
    if not verify(state["key"], body, request.headers.get(SIGNATURE_HEADER, ""),
                  request.headers.get(TIMESTAMP_HEADER, "")):
        log.warning("Telnyx request refused: missing, wrong or stale %s for %s", SIGNATURE_HEADER, request.path)
        return json_error(403, "invalid_signature", f"missing, wrong or stale {SIGNATURE_HEADER}")
    return None


@bp.errorhandler(Exception)
def as_json(exc: Exception) -> Response:
    return as_json_error(exc)


@bp.route("/voice", methods=["POST"])
def voice() -> Response:
    fields = _fields()
    call_id = _call_sid(fields)
    voice: Voice = _state()["voice"]
    if fields.get("CallStatus", "") in END_REASONS:
        return _twiml(nothing())
    admission = runtime().admission
    if not admission.enter():
        log.warning("Telnyx call refused call_id=%s: this instance is at capacity", call_id)
        return _twiml(voice.reject_busy())
    tickets: list[str] = []
    try:
        greeting = _conversation().start_call(
            call_id, optional_text(fields, "From", MAX_NUMBER_CHARS),
            called=optional_text(fields, "To", MAX_NUMBER_CHARS),
            attach=lambda call: tickets.append(socket_ticket.issue(call.channel)), deadline=Deadline(RESPONSE_BUDGET))
    except StoreFull:
        log.warning("Telnyx call refused call_id=%s: the session store is full (MAX_LIVE_CALLS)", call_id)
        return _twiml(voice.reject_busy())
    finally:
        admission.leave()
    if greeting is None:
        return _twiml(voice.hang_up(""))
    cfg = current_app.config
    base = f"{str(cfg['PUBLIC_URL']).rstrip('/')}{bp.url_prefix}"
    socket_url = websocket_url(f"{base}/relay?{urlencode({'call': call_id, 'ticket': tickets[0]})}")
    return _twiml(voice.relay(greeting, socket_url, f"{base}/relay-end", voice=cfg["TELNYX_VOICE"],
                              transcription_provider=cfg["TELNYX_TRANSCRIPTION_PROVIDER"]))


@bp.route("/relay", websocket=True)
def relay() -> Response:
    """The call's relay socket, opened with the ticket /voice gave; ConversationRelay's session, shared."""
    return open_socket(_conversation(), CALL_SID)


@bp.route("/relay-end", methods=["POST"])
def relay_end() -> Response:
    fields = _fields()
    _call_sid(fields)
    return _twiml(_state()["voice"].after_relay(fields.get("HandoffData"), current_app.config["TRANSFER_NUMBER"]))


@bp.route("/status", methods=["POST"])
def status() -> Response:
    fields = _fields()
    call_id = _call_sid(fields)
    ended = how_it_ended(fields)
    if ended is not None:
        _conversation().end_call(call_id, reason=ended[0], details=ended[1], deadline=Deadline(RESPONSE_BUDGET))
    return _twiml(nothing())

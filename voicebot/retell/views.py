"""Retell's endpoints: the custom-LLM socket ``/retell/{call_id}`` and the signed webhook ``/retell/webhook``.

The socket is unsigned, so before the upgrade the call is asked of Retell's API: a call Retell does not
know, or one no longer live, gets an HTTP refusal, no socket, no word and no model spent. Its session is
opened there (CONTEXT_URL asked once, the greeting, the caller's number and Retell's dynamic variables)
and held by this socket, so a second socket for a live call is refused while the first lives.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from flask import Blueprint, Response, current_app, g, request
from simple_websocket import ConnectionClosed  # type: ignore[import-untyped]

from ..conversation import Conversation
from ..deadline import RESPONSE_BUDGET, Deadline
from ..exceptions import InvalidEvent, StoreFull
from ..runtime import runtime
from ..web import conversation_of, raw_body
from ..web.errors import as_json_error, json_error
from ..web.websocket import accept as accept_websocket
from .calls import RetellCall, RetellCalls, RetellUnavailable, call_from
from .session import RetellSession, hold, let_go
from .signature import HEADER, verify

log = logging.getLogger(__name__)

NAME = "retell"
bp = Blueprint(NAME, __name__, url_prefix="/retell")

# Retell's call ids: letters and digits (32 of them today); a little room either way.
CALL_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")
# What Retell's disconnection_reason says about how the call ended, in voicebot's words.
END_REASONS = {"user_hangup": "hung_up", "agent_hangup": "bot_ended", "call_transfer": "transferred",
               "voicemail_reached": "voicemail", "inactivity": "silence", "max_duration_reached": "max_duration",
               "dial_busy": "busy", "dial_failed": "failed", "dial_no_answer": "no_answer"}
MAX_WEBHOOK_BYTES = 4 * 1024 * 1024  # call_analyzed carries the whole transcript and its analysis


def _conversation() -> Conversation:
    return conversation_of(NAME)


def _calls() -> RetellCalls | None:
    calls: RetellCalls | None = runtime().platforms.get(NAME)
    return calls


def end_reason(call: RetellCall | None) -> tuple[str, dict[str, Any] | None]:
    raw = call.disconnection_reason if call is not None else None
    return END_REASONS.get(raw or "", "ended"), ({"disconnection_reason": raw} if raw else None)


@bp.errorhandler(Exception)
def as_json(exc: Exception) -> Response:
    return as_json_error(exc)


@bp.route("/<call_id>", websocket=True)
def socket(call_id: str) -> Response:
    calls = _calls()
    if calls is None:
        return json_error(404, "retell_disabled", "/retell is off: set RETELL_API_KEY to the account's API key")
    if not CALL_ID.fullmatch(call_id):
        return json_error(403, "unknown_call", "the socket's URL must name a Retell call")
    g.call_id = call_id
    deadline = Deadline(RESPONSE_BUDGET)
    try:
        call = calls.lookup(call_id, deadline)
    except RetellUnavailable as exc:
        log.warning("retell socket refused call_id=%s: Retell's API could not say: %s", call_id, exc)
        return json_error(503, "retell_unavailable", "Retell's API could not confirm the call", **{"Retry-After": "1"})
    if call is None or not call.live:
        log.warning("retell socket refused call_id=%s: %s", call_id,
                    "Retell does not know the call" if call is None else f"the call is {call.status[:16]}")
        return json_error(403, "unknown_call", "Retell does not know this call as live")
    conversation = _conversation()
    resumed = conversation.peek(call_id) is not None
    held: list[bool] = []
    try:
        greeting = conversation.start_call(call_id, call.caller, called=call.called, variables=call.variables,
                                           attach=lambda c: held.append(hold(c.channel)), deadline=deadline)
    except StoreFull:
        log.warning("retell socket refused call_id=%s: the session store is full (MAX_LIVE_CALLS)", call_id)
        return json_error(503, "busy", "the session store is full", **{"Retry-After": "1"})
    if greeting is None:
        return json_error(403, "call_ended", "this call has ended")
    if not held or not held[0]:
        log.warning("retell socket refused call_id=%s: another socket holds the call", call_id)
        return json_error(409, "call_held", "another socket holds this call")
    slots = runtime().socket_slots
    if not slots.acquire(blocking=False):
        conversation.with_channel(call_id, let_go, wait=conversation.settings.lock_wait)
        log.warning("retell socket refused call_id=%s: this worker holds MAX_SOCKET_CALLS sockets already", call_id)
        return json_error(503, "busy", "this worker holds MAX_SOCKET_CALLS call sockets already")
    transfer_number = current_app.config["TRANSFER_NUMBER"]
    draining = runtime().draining

    def session(ws: Any) -> None:
        log.info("retell session call_id=%s resumed=%s", call_id, resumed)
        try:
            RetellSession(ws, conversation, call_id, transfer_number, draining).serve(
                "" if resumed else greeting, lambda: _closed(conversation, calls, call_id))
        except ConnectionClosed:
            raise
        except Exception:
            log.exception("retell session failed unexpectedly call_id=%s", call_id)

    try:
        return accept_websocket(session)
    finally:
        slots.release()


def _closed(conversation: Conversation, calls: RetellCalls, call_id: str) -> None:
    """The socket closed: the call ends with its record if Retell says it has ended; a live one is let go, for
    Retell to reopen (its call_ended webhook, or the session TTL, ends it otherwise)."""
    conversation.with_channel(call_id, let_go, wait=conversation.settings.lock_wait)
    deadline = Deadline(RESPONSE_BUDGET)
    try:
        call = calls.lookup(call_id, deadline)
    except RetellUnavailable as exc:
        log.info("retell socket closed call_id=%s: Retell's API could not say whether the call ended: %s",
                 call_id, exc)
        return
    if call is not None and call.live:
        log.info("retell socket closed call_id=%s: the call is live; Retell reopens it", call_id)
        return
    reason, details = end_reason(call)
    conversation.end_call(call_id, reason=reason, details=details, deadline=deadline)


@bp.route("/webhook", methods=["POST"])
def webhook() -> Response:
    """Retell's call events, signed with the API key: call_ended ends the call and makes its one record."""
    calls = _calls()
    if calls is None:
        return json_error(404, "retell_disabled", "/retell is off: set RETELL_API_KEY to the account's API key")
    body = raw_body(MAX_WEBHOOK_BYTES)
    if not verify(body, current_app.config["RETELL_API_KEY"], request.headers.get(HEADER, "")):
        log.warning("Retell webhook refused: missing, wrong or stale %s", HEADER)
        return json_error(401, "invalid_signature", f"missing, wrong or stale {HEADER}")
    try:
        event = json.loads(body)
    except ValueError:
        raise InvalidEvent("the body is not JSON") from None
    if not isinstance(event, dict) or not isinstance(event.get("event"), str):
        raise InvalidEvent("the body must be an object with an 'event'")
    call = call_from(event.get("call"))
    if call is None:
        raise InvalidEvent("'call' must be a call object with its 'call_id'")
    g.call_id = call.call_id
    if event["event"] == "call_ended":
        reason, details = end_reason(call)
        _conversation().end_call(call.call_id, reason=reason, details=details, deadline=Deadline(RESPONSE_BUDGET))
    return Response(status=204)

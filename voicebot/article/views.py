"""The article's webhook contract: the reply travels back in the HTTP response.

``POST /webhook/call-started`` answers ``{"greeting"}``; ``POST
/webhook/transcript`` answers ``{"response"}`` to a transcript and ends the
call on ``{"type": "call.ended"}``.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request

from .. import placeholders
from ..conversation import Conversation
from ..deadline import RESPONSE_BUDGET, Deadline
from ..web.errors import json_error
from ..exceptions import InvalidEvent, LockLost
from ..turn import Outcome
from ..web.validation import identifier, optional_text, required_text
from ..web import conversation_of, json_body, start_timing, with_llm_timing
from ..web.access import bearer_matches, local_trial_refusal
from ..web.admission import admit, release
from ..web.openapi import documented
from . import api

bp = Blueprint("article", __name__, url_prefix="/webhook")
bp.before_request(start_timing)

MAX_CALLER_CHARS = api.MAX_CALLER_CHARS


@bp.before_request
def check_access() -> Response | None:
    token = current_app.config["WEBHOOK_TOKEN"]
    if token:
        if not bearer_matches(request, token):
            return json_error(401, "unauthorized", "send Authorization: Bearer <WEBHOOK_TOKEN>",
                              **{"WWW-Authenticate": "Bearer"})
    else:
        refusal = local_trial_refusal(request)
        if refusal is not None:
            return json_error(*refusal)
    return admit()


bp.teardown_request(release)


def _conversation() -> Conversation:
    return conversation_of(bp.name)  # the platform's name, as voicebot.article names it


def _event_type(body: dict[str, Any], allowed: tuple[str, ...], default: str) -> str:
    kind = body.get("type", default)
    if not isinstance(kind, str) or kind not in allowed:
        raise InvalidEvent(f"'type' must be one of {', '.join(allowed)}; got {kind!r}")
    return kind


def _call_id(body: dict[str, Any]) -> str:
    call_id = g.call_id = identifier(body, "call_id")
    return call_id


@bp.post("/call-started")
@documented(api.CALL_STARTED)
def call_started() -> Response:
    body = json_body()
    _event_type(body, ("call.started",), "call.started")
    call_id = _call_id(body)
    caller = optional_text(body, "caller_num", MAX_CALLER_CHARS)
    try:
        variables = placeholders.clean_variables(body.get("variables"), "variables")
    except ValueError as exc:
        raise InvalidEvent(str(exc)) from None
    return jsonify(greeting=_conversation().start_call(call_id, caller, variables=variables,
                                                       deadline=Deadline(RESPONSE_BUDGET)))


@bp.post("/transcript")
@documented(api.TRANSCRIPT)
def transcript() -> Response:
    body = json_body()
    kind = _event_type(body, ("transcript", "call.ended"), "transcript")
    call_id = _call_id(body)
    conversation = _conversation()
    if kind == "call.ended":
        conversation.end_call(call_id, reason="ended", deadline=Deadline(RESPONSE_BUDGET))
        return jsonify(status="ended")
    text = required_text(body, "transcript", current_app.config["MAX_TRANSCRIPT_CHARS"])
    caller = optional_text(body, "caller_num", MAX_CALLER_CHARS)
    event_id = identifier(body, "event_id") if body.get("event_id") not in (None, "") else None
    turn = conversation.take_turn(call_id, text, caller, event_id=event_id, deadline=Deadline(RESPONSE_BUDGET))
    if turn.outcome is Outcome.CALL_ENDED:  # only calls ended for good; the article's contract ends none so
        return jsonify(status="ended")
    if turn.outcome is Outcome.DUPLICATE:
        return jsonify(response=turn.reply, duplicate=True)
    if not turn.saved:
        # Another turn of the call may have run meanwhile; this reply would
        # answer a history that no longer exists.
        raise LockLost("the turn ran past its lease and was not recorded; send it again")
    answer: dict[str, Any] = {"response": turn.reply}
    if turn.action is not None:
        # The bot ended the call or handed it on: its part, and its record, ended with the turn;
        # a client that ignores "action" still gets its "response".
        answer["action"] = turn.action.as_dict()
    if turn.tools:
        answer["tools"] = list(turn.tools)  # the operator's tools the model used (`voicebot test` checks them)
    if turn.fallback:
        answer["fallback"] = True  # the model failed or ran late: this is FALLBACK_REPLY
    return with_llm_timing(jsonify(answer), turn.llm_seconds)

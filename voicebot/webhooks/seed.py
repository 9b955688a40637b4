"""The article's webhook contract: the reply travels back in the HTTP response.

``POST /webhook/call-started`` answers ``{"greeting"}``; ``POST
/webhook/transcript`` answers ``{"response"}`` to a transcript and ends the
call on ``{"type": "call.ended"}``.
"""

from __future__ import annotations

from flask import Blueprint, current_app, g, jsonify

from ..conversation import Conversation
from ..exceptions import InvalidEvent
from ..validation import identifier, optional_text, required_text
from . import json_body, start_timing, with_llm_timing

bp = Blueprint("seed", __name__, url_prefix="/webhook")
bp.before_request(start_timing)

MAX_CALLER_CHARS = 64


def _conversation() -> Conversation:
    return current_app.extensions["voicebot"]


def _event_type(body: dict, allowed: tuple[str, ...], default: str) -> str:
    kind = body.get("type", default)
    if kind not in allowed:
        raise InvalidEvent(f"'type' must be one of {', '.join(allowed)}; got {kind!r}")
    return kind


def _call_id(body: dict) -> str:
    g.call_id = identifier(body, "call_id")
    return g.call_id


@bp.post("/call-started")
def call_started():
    body = json_body()
    _event_type(body, ("call.started",), "call.started")
    call_id = _call_id(body)
    caller = optional_text(body, "caller_num", MAX_CALLER_CHARS)
    return jsonify(greeting=_conversation().start_call(call_id, caller))


@bp.post("/transcript")
def transcript():
    body = json_body()
    kind = _event_type(body, ("transcript", "call.ended"), "transcript")
    call_id = _call_id(body)
    conversation = _conversation()
    if kind == "call.ended":
        conversation.end_call(call_id)
        return jsonify(status="ended")
    text = required_text(body, "transcript", current_app.config["MAX_TRANSCRIPT_CHARS"])
    caller = optional_text(body, "caller_num", MAX_CALLER_CHARS)
    turn = conversation.take_turn(call_id, text, caller)
    return with_llm_timing(jsonify(response=turn.reply), turn.llm_seconds)

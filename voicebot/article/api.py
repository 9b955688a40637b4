"""The article's contract in the API document: what each webhook takes and answers."""

from __future__ import annotations

from typing import Any, Mapping

from ..web.openapi import Operation, Schema, optional_text, text
from ..web.schemas import IDENTIFIER, VARIABLES

MAX_CALLER_CHARS = 64
_TAGS = ("the article's contract",)
_ERRORS = (403, 415, 503)  # a local trial's refusals (no WEBHOOK_TOKEN), and the instance or store unavailable

CALL_STARTED = Operation(
    "A call begins: its session opens (a live call keeps its history) and the greeting comes back.",
    answers={200: ("the greeting to say", {"type": "object", "required": ["greeting"],
                                           "properties": {"greeting": {"type": ["string", "null"]}}})},
    errors=_ERRORS, security="webhookToken", tags=_TAGS,
    body={"type": "object", "required": ["call_id"], "properties": {
        "type": {"const": "call.started"}, "call_id": IDENTIFIER,
        "caller_num": optional_text(MAX_CALLER_CHARS), "variables": VARIABLES}},
)


def _transcript_body(config: Mapping[str, Any]) -> Schema:
    return {"type": "object", "required": ["call_id"],
            "properties": {"type": {"enum": ["transcript", "call.ended"]}, "call_id": IDENTIFIER,
                           "transcript": {}, "caller_num": optional_text(MAX_CALLER_CHARS),
                           "event_id": optional_text(IDENTIFIER["maxLength"])},
            # What the caller said is required, unless the event ends the call.
            "if": {"required": ["type"], "properties": {"type": {"const": "call.ended"}}},
            "else": {"required": ["transcript"],
                     "properties": {"transcript": text(int(config["MAX_TRANSCRIPT_CHARS"]))}}}


TRANSCRIPT = Operation(
    "What the caller said: one turn of the call, its reply in the answer; or the call's end (type call.ended).",
    answers={200: ("the reply (response), or the call's end (status)", {
        "type": "object",
        "properties": {"response": {"type": "string"}, "status": {"const": "ended"},
                       "duplicate": {"type": "boolean"}, "fallback": {"type": "boolean"},
                       "action": {"type": "object", "required": ["type"],
                                  "properties": {"type": {"enum": ["hangup", "transfer"]}, "to": {"type": "string"}}},
                       "tools": {"type": "array"}}})},
    errors=_ERRORS, security="webhookToken", tags=_TAGS, body=_transcript_body,
)

"""Calls and campaigns in the API document: what each endpoint takes and answers."""

from __future__ import annotations

from ..web.openapi import Operation, Schema, optional_text
from ..web.schemas import E164, VARIABLES

# A campaign's contacts come in one request: larger than a webhook's body may be.
CAMPAIGN_BODY_BYTES = 8 * 1024 * 1024
MAX_CONTACTS = 20_000

_TAGS = ("calls and campaigns",)
# Off until its token is set (404), a destination outside DIAL_ALLOWED (403), the platform's errors.
_ERRORS = (403, 404, 424, 502, 503)
_PLATFORM = optional_text(16)
_VOICEMAIL = {"type": ["string", "null"], "enum": ["message", "hangup", "", None]}
_CAMPAIGN_ID: Schema = {"name": "campaign_id", "in": "path", "required": True,
                        "schema": {"type": "string", "maxLength": 64}}

SUMMARY: Schema = {
    "type": "object", "required": ["campaign_id", "state", "contacts", "done", "live", "pending", "outcomes"],
    "properties": {"campaign_id": {"type": "string"},
                   "state": {"enum": ["running", "paused", "cancelled", "done"]},
                   "platform": {"type": "string"}, "contacts": {"type": "integer"}, "done": {"type": "integer"},
                   "live": {"type": "integer"}, "pending": {"type": "integer"},
                   "outcomes": {"type": "object", "additionalProperties": {"type": "integer"}},
                   "concurrency": {"type": "integer"}, "window": {"type": ["string", "null"]},
                   "timezone": {"type": "string"}},
}

PLACE_CALL = Operation(
    "Place one call: the platform dials it, and the call runs its conversation with these variables.",
    answers={201: ("placed", {"type": "object", "required": ["call_id", "platform", "status"],
                              "properties": {"call_id": {"type": "string"}, "platform": {"type": "string"},
                                             "status": {"const": "placed"}}})},
    errors=_ERRORS, security="operatorToken", tags=_TAGS,
    body={"type": "object", "required": ["to"],
          "properties": {"to": E164, "variables": VARIABLES, "platform": _PLATFORM, "voicemail": _VOICEMAIL}},
)

START_CAMPAIGN = Operation(
    "Start a campaign: every contact checked now (number, duplicates, variables, placeholders), then dialled "
    "by every worker of every instance within the rules.",
    answers={201: ("started", SUMMARY)}, errors=_ERRORS, security="operatorToken", tags=_TAGS,
    body_limit=lambda config: CAMPAIGN_BODY_BYTES,
    body={"type": "object", "required": ["contacts"], "properties": {
        "contacts": {"type": "array", "minItems": 1, "maxItems": MAX_CONTACTS,
                     "items": {"type": "object", "required": ["phone"],
                               "properties": {"phone": E164, "variables": VARIABLES}}},
        "platform": _PLATFORM, "voicemail": _VOICEMAIL,
        "concurrency": {"type": "integer", "minimum": 1, "maximum": 1000},
        "attempts": {"type": "integer", "minimum": 1, "maximum": 10},
        "retry_gap": {"type": "integer", "minimum": 0, "maximum": 7 * 86400},
        "pace": {"type": "number", "minimum": 0.05, "maximum": 20},
        "window": {"type": ["string", "null"],
                   "pattern": r"^$|^([01][0-9]|2[0-3]):[0-5][0-9]-([01][0-9]|2[0-3]|24):[0-5][0-9]$",
                   "description": "HH:MM-HH:MM such as 09:00-18:00"},
        "timezone": optional_text(64)}},
)

CAMPAIGN_STATUS = Operation("A campaign's progress: contacts by state, outcomes so far.",
                            answers={200: ("its progress", SUMMARY)}, errors=(404,), security="operatorToken",
                            tags=_TAGS, parameters=(_CAMPAIGN_ID,))

CAMPAIGN_RESULTS = Operation(
    "One row per contact: its outcome (final, or the last attempt's), attempts, duration, record and call ids.",
    answers={200: ("its results", {
        "type": "object", "required": ["campaign_id", "state", "results"],
        "properties": {"campaign_id": {"type": "string"}, "state": {"type": "string"},
                       "results": {"type": "array", "items": {"type": "object", "required": ["phone", "final"]}}}})},
    errors=(404,), security="operatorToken", tags=_TAGS, parameters=(_CAMPAIGN_ID,))

CHANGE_CAMPAIGN = Operation(
    "Pause, resume or cancel: pause and cancel answer once the dial under way has returned, so that no call "
    "reaches the platform after them; a cancelled campaign's live calls go on to their end.",
    answers={200: ("its progress after the change", SUMMARY)}, errors=(404,), security="operatorToken", tags=_TAGS,
    parameters=(_CAMPAIGN_ID, {"name": "action", "in": "path", "required": True,
                               "schema": {"enum": ["pause", "resume", "cancel"]}}))

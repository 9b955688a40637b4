"""``POST /calls``: place one call, ``{"to": "+15551234567", "variables": {"name": "Ana"}}``."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request

from .. import placeholders
from ..exceptions import InvalidEvent
from ..speaker import Dialler
from ..web import json_body
from ..web.access import bearer_matches
from ..web.errors import json_error
from ..web.validation import optional_text, required_text
from .settings import E164

log = logging.getLogger(__name__)

bp = Blueprint("outbound", __name__)


@bp.before_request
def check_access() -> Response | None:
    token = current_app.config["OUTBOUND_TOKEN"] or current_app.config["WEBHOOK_TOKEN"]
    if not token:
        return json_error(404, "outbound_disabled", "POST /calls is off: set OUTBOUND_TOKEN (or WEBHOOK_TOKEN); "
                                                    "nothing places a call for an anonymous caller")
    if not bearer_matches(request, token):
        return json_error(401, "unauthorized", "send Authorization: Bearer <OUTBOUND_TOKEN or WEBHOOK_TOKEN>",
                          **{"WWW-Authenticate": "Bearer"})
    if not current_app.extensions["diallers"]:
        return json_error(404, "outbound_disabled", "no platform places calls: set OUTBOUND_NUMBER, PUBLIC_URL and "
                                                    "the platform's keys (see docs/outbound.md)")
    return None


@bp.post("/calls")
def place_call() -> tuple[Response, int]:
    body = json_body()
    to = required_text(body, "to", 32)
    if not E164.match(to):
        raise InvalidEvent("'to' must be a number in E.164 form, such as +15551234567")
    try:
        variables = placeholders.clean_variables(body.get("variables"), "variables")
    except ValueError as exc:
        raise InvalidEvent(str(exc)) from None
    dialler = _dialler(optional_text(body, "platform", 16))
    cfg = current_app.config
    lacking = placeholders.missing((cfg["OUTBOUND_GREETING"], cfg["OUTBOUND_SYSTEM_PROMPT"] or cfg["SYSTEM_PROMPT"],
                                    cfg["VOICEMAIL_MESSAGE"]), variables)
    if lacking:
        raise InvalidEvent(f"'variables' has no value for {', '.join(lacking)}, which the call's greeting, prompt "
                           "or voicemail message needs")
    call_id = dialler.place_call(to, variables)
    g.call_id = call_id
    log.info("call placed call_id=%s platform=%s", call_id, dialler.platform)
    answer: dict[str, Any] = {"call_id": call_id, "platform": dialler.platform, "status": "placed"}
    return jsonify(answer), 201


def _dialler(asked: str | None) -> Dialler:
    diallers: dict[str, Dialler] = current_app.extensions["diallers"]
    name = asked or current_app.config["OUTBOUND_PLATFORM"] or (next(iter(diallers)) if len(diallers) == 1 else "")
    if not name:
        raise InvalidEvent(f"say which platform places the call: 'platform' is one of {', '.join(sorted(diallers))} "
                           "(or set OUTBOUND_PLATFORM)")
    if name not in diallers:
        raise InvalidEvent(f"'platform' must be one of {', '.join(sorted(diallers))}; got {name!r}")
    return diallers[name]

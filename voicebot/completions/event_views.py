"""Where the front ends report a call's end: ``POST /vapi/events`` (the assistant's Server URL) and
``POST /elevenlabs/post-call`` (the workspace's post-call webhook)."""

from __future__ import annotations

import hmac

from flask import Blueprint, Response, current_app, g, jsonify, request

from ..deadline import RESPONSE_BUDGET, Deadline
from ..web import conversation_of, json_body, raw_body
from ..web.access import bearer_matches
from ..web.errors import json_error
from .dialects import ELEVENLABS, VAPI
from .events import elevenlabs_end, elevenlabs_signed, vapi_end
from .views import token

vapi_bp = Blueprint("vapi_events", __name__)
elevenlabs_bp = Blueprint("elevenlabs_events", __name__)


def _end(platform: str, call_id: str, reason: str) -> Response:
    g.call_id = call_id
    known = conversation_of(platform).end_call(call_id, reason="hung_up", details={"ended_reason": reason},
                                               deadline=Deadline(RESPONSE_BUDGET))
    return jsonify(status="ended" if known else "not_live")


@vapi_bp.post("/vapi/events")
def vapi_events() -> Response:
    expected = token(current_app.config)
    # A Server URL credential sends the token as a bearer; the older serverUrlSecret as X-Vapi-Secret.
    secret = request.headers.get("X-Vapi-Secret", "")
    if not expected or not (bearer_matches(request, expected)
                            or hmac.compare_digest(secret.encode("utf-8", "surrogatepass"), expected.encode())):
        return json_error(401, "unauthorized", "send the Server URL credential: Authorization: Bearer "
                                               "<COMPLETIONS_TOKEN> (or X-Vapi-Secret)")
    end = vapi_end(json_body())
    if end is None:
        return jsonify(status="ignored")  # Vapi's other messages (status-update, transcript...) change nothing
    return _end(VAPI.name, *end)


@elevenlabs_bp.post("/elevenlabs/post-call")
def elevenlabs_post_call() -> Response:
    secret = current_app.config["ELEVENLABS_WEBHOOK_SECRET"]
    if not secret:
        return json_error(404, "not_found", "/elevenlabs/post-call is off: set ELEVENLABS_WEBHOOK_SECRET to the "
                                            "webhook's HMAC secret")
    if not elevenlabs_signed(secret, request.headers.get("ElevenLabs-Signature"), raw_body()):
        return json_error(401, "bad_signature", "the ElevenLabs-Signature header does not sign this body now")
    end = elevenlabs_end(json_body())
    if end is None:
        return jsonify(status="ignored")
    return _end(ELEVENLABS.name, *end)

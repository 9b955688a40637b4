"""VoIPBin's webhooks: signed events at ``/webhook/voipbin``, the ``fetch`` flow action at ``.../fetch``."""

from __future__ import annotations

import logging

from flask import Blueprint, current_app, g, jsonify, request

from ..errors import json_error
from ..validation import identifier, json_object, required_text
from ..voipbin.bridge import VoipbinBridge
from ..voipbin.signing import HEADER, verify
from . import json_body, start_timing, with_llm_timing

log = logging.getLogger(__name__)

bp = Blueprint("voipbin", __name__, url_prefix="/webhook/voipbin")
bp.before_request(start_timing)


def _bridge() -> VoipbinBridge | None:
    return current_app.extensions.get("voipbin")


# VoIPBin sends events with the account's webhook_method; POST and PUT carry a body.
@bp.route("", methods=["POST", "PUT"])
def events():
    bridge = _bridge()
    if bridge is None:
        log.warning("VoIPBin event refused: the endpoint is off (see the start-up log)")
        return json_error(404, "voipbin_disabled", current_app.config["VOIPBIN_DISABLED_BECAUSE"])
    secret = current_app.config["VOIPBIN_WEBHOOK_SECRET"]
    # The signature covers the raw bytes: check it before parsing anything.
    if secret and not verify(request.get_data(cache=True), request.headers.get(HEADER), secret):
        log.warning("VoIPBin event refused: missing or wrong %s", HEADER)
        return json_error(401, "invalid_signature", f"missing or wrong {HEADER}")
    body = json_body()
    event_type = required_text(body, "type", 64)
    data = json_object(body, "data")
    # Only call events carry the call id; the bridge logs the others' call ids itself.
    g.call_id = data.get("id") if event_type.startswith("call_") and isinstance(data.get("id"), str) else "-"
    outcome = bridge.handle(event_type, data)
    return with_llm_timing(jsonify(status=outcome.status), outcome.llm_seconds)


@bp.post("/fetch")
def fetch():
    bridge = _bridge()
    if bridge is None:
        return json_error(404, "voipbin_disabled", current_app.config["VOIPBIN_DISABLED_BECAUSE"])
    body = json_body()
    identifier(body, "activeflow_id")
    g.call_id = identifier(body, "reference_id")
    return jsonify(bridge.flow_actions(g.call_id))

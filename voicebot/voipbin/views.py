"""VoIPBin's webhooks: signed events at ``/webhook/voipbin``, the ``fetch`` flow action at ``.../fetch``."""

from __future__ import annotations

import hmac
import logging
from typing import cast

from flask import Blueprint, Response, current_app, g, jsonify, request

from ..deadline import RESPONSE_BUDGET, Deadline
from ..runtime import runtime
from ..web.errors import json_error
from ..web.validation import identifier, json_object, required_text
from .bridge import VoipbinBridge
from .signing import HEADER, verify
from ..web import json_body, raw_body, start_timing, with_llm_timing
from ..web.admission import admit, release

log = logging.getLogger(__name__)

bp = Blueprint("voipbin", __name__, url_prefix="/webhook/voipbin")
bp.before_request(start_timing)
bp.teardown_request(release)


@bp.before_request
def admit_events() -> Response | None:
    # Never the fetch: any answer but a 200 stops the call's flow, and VoIPBin hangs the call up.
    return None if request.endpoint == "voipbin.fetch" else admit()


# VoIPBin sends with the account's webhook_method, and the JSON body with every one of them.
METHODS = ["POST", "PUT", "GET", "DELETE"]
# VoIPBin gives a fetch about 3 s (its internal budget for the next action).
FETCH_BUDGET = 2.5


def _bridge() -> VoipbinBridge | None:
    """The bridge voicebot.voipbin keeps under its name (the blueprint's), or None while the platform is off."""
    return cast("VoipbinBridge | None", runtime().platforms.get(bp.name))


def _off() -> Response:
    return json_error(404, "voipbin_disabled", current_app.config["VOIPBIN_DISABLED_BECAUSE"])


@bp.route("", methods=METHODS)
def events() -> Response:
    deadline = Deadline(RESPONSE_BUDGET)
    bridge = _bridge()
    if bridge is None:
        log.warning("VoIPBin event refused: the endpoint is off (see the start-up log)")
        return _off()
    secret = current_app.config["VOIPBIN_WEBHOOK_SECRET"]
    # The signature covers the raw bytes: check it before parsing anything.
    if secret and not verify(raw_body(), request.headers.get(HEADER), secret):
        log.warning("VoIPBin event refused: missing or wrong %s", HEADER)
        return json_error(401, "invalid_signature", f"missing or wrong {HEADER}")
    body = json_body()
    event_type = required_text(body, "type", 64)
    data = json_object(body, "data")
    # Only call events carry the call id; the bridge logs the others' call ids itself.
    g.call_id = data.get("id") if event_type.startswith("call_") and isinstance(data.get("id"), str) else "-"
    outcome = bridge.handle(event_type, data, deadline)
    return with_llm_timing(jsonify(status=outcome.status), outcome.llm_seconds, outcome.first_sentence_seconds)


@bp.route("/fetch", methods=METHODS)
def fetch() -> Response:
    deadline = Deadline(FETCH_BUDGET)
    bridge = _bridge()
    token = current_app.config["VOIPBIN_FETCH_TOKEN"]
    if bridge is None:
        return _off()
    if not token:
        return json_error(404, "fetch_disabled", "/webhook/voipbin/fetch is off: set VOIPBIN_FETCH_TOKEN")
    # VoIPBin does not sign fetch requests: the secret is in the URL the flow names.
    given = request.args.get("token", "")
    if not hmac.compare_digest(given.encode("utf-8", "surrogatepass"), token.encode()):
        log.warning("fetch refused: missing or wrong token")
        return json_error(401, "invalid_token", "missing or wrong ?token=")
    body = json_body()
    identifier(body, "activeflow_id")
    g.call_id = identifier(body, "reference_id")
    return jsonify(bridge.flow_actions(g.call_id, _public_url(), deadline))


def _public_url() -> str:
    """This request's URL as VoIPBin called it: behind Heroku's router or nginx, TLS ended before us."""
    scheme = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip()
    if scheme not in ("http", "https"):
        scheme = request.scheme
    return f"{scheme}://{request.host}{request.full_path}"

"""Liveness and readiness for load balancers and orchestrators."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from .. import metrics
from .errors import json_error
from ..exceptions import StoreError
from ..runtime import runtime
from .access import bearer_matches, is_local
from .openapi import Operation, documented

log = logging.getLogger(__name__)

bp = Blueprint("ops", __name__)


_STATUS = {"type": "object", "required": ["status"],
           "properties": {"status": {"type": "string"}, "reason": {"type": "string"}}}


@bp.get("/healthz")
@documented(Operation("Liveness: the process answers HTTP.", answers={200: ("alive", _STATUS)}, tags=("health",)))
def healthz() -> ResponseReturnValue:
    """The process answers HTTP."""
    return jsonify(status="ok")


@bp.get("/readyz")
@documented(Operation("Readiness: the session store answers, and the model's key was not refused.",
                      answers={200: ("ready", _STATUS), 503: ("not ready, and why", _STATUS)}, tags=("health",)))
def readyz() -> ResponseReturnValue:
    """The session store answers too: without it no turn can be served."""
    store = runtime().store
    try:
        store.ping()
    except StoreError as exc:
        # The error names hosts and ports: the log may say so, a stranger may not.
        log.warning("readyz: the session store does not answer: %s", exc)
        return jsonify(status="unavailable", reason="session store"), 503
    llm_health = runtime().llm_health
    if llm_health.rejected():
        return jsonify(status="unavailable", reason="model key rejected"), 503
    return jsonify(status="ready")


@bp.get("/metrics")
def prometheus_metrics() -> ResponseReturnValue:
    token = current_app.config["METRICS_TOKEN"]
    if token and not bearer_matches(request, token):
        return json_error(401, "unauthorized", "send Authorization: Bearer <METRICS_TOKEN>",
                          **{"WWW-Authenticate": "Bearer"})
    if not token and not is_local(request):
        # On a public bind (the Procfile's 0.0.0.0) an open /metrics tells anyone the call volume.
        return json_error(403, "forbidden", "/metrics answers only this machine until METRICS_TOKEN is set")
    body, content_type = metrics.render(runtime().gauges)
    return Response(body, content_type=content_type)

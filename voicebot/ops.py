"""Liveness and readiness for load balancers and orchestrators."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from . import metrics
from .exceptions import StoreError

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz():
    """The process answers HTTP."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    """The session store answers too: without it no turn can be served."""
    store = current_app.extensions["voicebot"].store
    try:
        store.ping()
    except StoreError as exc:
        return jsonify(status="unavailable", store=type(store).__name__, message=str(exc)), 503
    return jsonify(status="ready", store=type(store).__name__)


@bp.get("/metrics")
def prometheus_metrics():
    body, content_type = metrics.render(current_app.extensions["voicebot"].store)
    return Response(body, content_type=content_type)

"""The admission bound as Flask hooks: a webhook past it is answered 503 at once (``voicebot.admission``)."""

from __future__ import annotations

from flask import Response, g

from .. import metrics
from ..runtime import runtime
from .errors import json_error


def admit() -> Response | None:
    """A before_request hook: a 503 now, rather than a wait in gunicorn's queue."""
    if not runtime().admission.enter():
        metrics.ERRORS.labels("overloaded").inc()
        return json_error(503, "overloaded", "this instance is at capacity; send it again in a second",
                          **{"Retry-After": "1"})
    g.admitted = True
    return None


def release(_exception: BaseException | None = None) -> None:
    if g.pop("admitted", False):
        runtime().admission.leave()

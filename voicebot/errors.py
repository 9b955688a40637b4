"""Every error leaves as a short JSON body with the right status: never HTML, never a traceback."""

from __future__ import annotations

import logging

from flask import Flask, current_app, g, jsonify
from werkzeug.exceptions import HTTPException

from .exceptions import CallBusy, InvalidEvent, StoreUnavailable, VoicebotError

log = logging.getLogger(__name__)

# voicebot's errors that reach a view, and how each is answered. 503s are the
# ones a webhook sender may usefully retry.
_STATUS = {
    InvalidEvent: (400, "invalid_event"),
    CallBusy: (503, "call_busy"),
    StoreUnavailable: (503, "store_unavailable"),
}


def json_error(status: int, error: str, message: str, **headers: str):
    response = jsonify(error=error, message=message)
    response.status_code = status
    response.headers.update(headers)
    return response


def _http_error(exc: HTTPException):
    error = (exc.name or "error").lower().replace(" ", "_")
    message = exc.description or exc.name
    if exc.code == 413:
        message = f"the body is too large: at most {current_app.config['MAX_CONTENT_LENGTH']} bytes"
    headers = dict(exc.get_headers())
    headers.pop("Content-Type", None)
    return json_error(exc.code or 500, error, message, **headers)


def _voicebot_error(exc: VoicebotError):
    for kind, (status, error) in _STATUS.items():
        if isinstance(exc, kind):
            if status >= 500:
                log.warning("%s call_id=%s: %s", error, g.get("call_id", "-"), exc)
                return json_error(status, error, str(exc), **{"Retry-After": "1"})
            return json_error(status, error, str(exc))
    return _unexpected(exc)


def _unexpected(exc: Exception):
    log.exception("unexpected failure call_id=%s", g.get("call_id", "-"))
    return json_error(500, "internal_error", "internal error; the call's history is unchanged")


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(VoicebotError, _voicebot_error)
    app.register_error_handler(Exception, _unexpected)

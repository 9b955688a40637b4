"""Every error leaves as a short JSON body with the right status: never HTML, never a traceback."""

from __future__ import annotations

import logging

from flask import Flask, Response, current_app, g, has_request_context, jsonify, request
from werkzeug.exceptions import HTTPException

from .. import metrics
from ..exceptions import (CallBusy, InvalidEvent, LockLost, PlatformError, PlatformRateLimited, PlatformRejected,
                          PlatformUnavailable, StoreError, StoreFull, StoreUnavailable, VoicebotError)

log = logging.getLogger(__name__)

# voicebot's errors that reach a view, most specific first, and how each is
# answered: status, error word, and the message a stranger may read (None:
# the exception's own, which names nothing internal; a platform's errors fill
# in its own word and name). 5xx are the ones a
# webhook sender (VoIPBin retries on 5xx only) may usefully retry; a 4xx tells
# it not to. Hosts, ports and vendor texts stay in the log.
_STATUS: dict[type[VoicebotError], tuple[int, str, str | None]] = {
    InvalidEvent: (400, "invalid_event", None),
    PlatformRejected: (424, "{platform}_rejected", "{name}'s API refused the request; sending it again will not help"),
    CallBusy: (503, "call_busy", "another turn of this call is still in progress; try again shortly"),
    LockLost: (503, "turn_not_recorded", "the turn ran past its hold on the call and was not recorded; "
                                         "send it again"),
    StoreFull: (503, "too_many_calls", "this instance holds as many calls as it may; try again shortly"),
    StoreUnavailable: (503, "store_unavailable", "the session store is unavailable; try again shortly"),
    StoreError: (503, "store_error", "the session store failed; try again shortly"),
    PlatformUnavailable: (503, "{platform}_unavailable", "{name}'s API did not answer; send the event again"),
    PlatformError: (502, "{platform}_error", "{name}'s API gave an answer voicebot could not use"),
}


def json_error(status: int, error: str, message: str, **headers: str) -> Response:
    metrics.ERRORS.labels(error).inc()
    response = jsonify(error=error, message=message)
    response.status_code = status
    response.headers.update(headers)
    return response


def _http_error(exc: HTTPException) -> Response:
    error = (exc.name or "error").lower().replace(" ", "_")
    message = exc.description or exc.name
    if exc.code == 413:
        # This request's own limit (a campaign's is larger than a webhook's), not the app's default.
        limit = has_request_context() and request.max_content_length or current_app.config["MAX_CONTENT_LENGTH"]
        message = f"the body is too large: at most {limit} bytes"
    headers = dict(exc.get_headers())
    headers.pop("Content-Type", None)
    return json_error(exc.code or 500, error, message, **headers)


def _voicebot_error(exc: VoicebotError) -> Response:
    for kind, (status, error, public) in _STATUS.items():
        if isinstance(exc, kind):
            if isinstance(exc, PlatformError):
                error = error.format(platform=exc.platform)
                public = (public or "").format(name=exc.display_name)
            if status >= 500 or isinstance(exc, PlatformError):
                log.warning("%s call_id=%s: %s", error, g.get("call_id", "-"), exc)
            message = str(exc) if public is None else public
            if status >= 500:
                # A platform that rate limits says when to come back; otherwise a second.
                wait = max(1, round(exc.retry_after)) if isinstance(exc, PlatformRateLimited) else 1
                return json_error(status, error, message, **{"Retry-After": str(wait)})
            return json_error(status, error, message)
    return _unexpected(exc)


def _unexpected(exc: Exception) -> Response:
    log.exception("unexpected failure call_id=%s", g.get("call_id", "-"))
    return json_error(500, "internal_error", "internal error; the call's history is unchanged")


def as_json_error(exc: Exception) -> Response:
    """The JSON answer the app's handlers give ``exc``, for a blueprint with handlers of its own."""
    if isinstance(exc, HTTPException):
        return _http_error(exc)
    if isinstance(exc, VoicebotError):
        return _voicebot_error(exc)
    return _unexpected(exc)


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(VoicebotError, _voicebot_error)
    app.register_error_handler(Exception, _unexpected)

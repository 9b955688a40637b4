"""One blueprint per webhook contract; each translates its events into the conversation core."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from flask import Response, current_app, g, request
from werkzeug.exceptions import RequestEntityTooLarge

from ..exceptions import InvalidEvent
from ..runtime import runtime

if TYPE_CHECKING:
    from ..conversation import Conversation


def raw_body(limit: int | None = None) -> bytes:
    """The request's bytes, at most MAX_BODY_BYTES (or ``limit``; 413 above), whether sized or chunked.

    Werkzeug checks the limit against Content-Length only; a chunked body has
    none, and its stream just stops at the limit, which would hand on a cut
    body as if it were whole.
    """
    if "raw_body" in g:
        kept: bytes = g.raw_body
        return kept
    if limit is None:
        limit = int(current_app.config["MAX_BODY_BYTES"])
    else:
        request.max_content_length = limit  # werkzeug's own check, for this request
    length = request.content_length
    if length is not None:
        if length > limit:
            raise RequestEntityTooLarge()
        data = request.get_data(cache=True)
    elif request.environ.get("wsgi.input_terminated"):
        data = request.environ["wsgi.input"].read(limit + 1)
        if len(data) > limit:
            raise RequestEntityTooLarge()
    else:
        data = b""
    g.raw_body = data
    return data


def json_body(limit: int | None = None) -> dict[str, Any]:
    """The request body as a JSON object, whatever Content-Type the sender set (parsed once a request)."""
    if "json_body" in g:
        parsed: dict[str, Any] = g.json_body
        return parsed
    raw = raw_body(limit)
    if not raw.strip():
        raise InvalidEvent("the body is empty; send a JSON object")
    try:
        body = json.loads(raw)
    except RecursionError:
        raise InvalidEvent("the body is nested too deeply") from None
    except ValueError:
        raise InvalidEvent("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise InvalidEvent(f"the body must be a JSON object, not {type(body).__name__}")
    g.json_body = body
    return body


def with_llm_timing(response: Response, llm_seconds: float, first_sentence_seconds: float | None = None) -> Response:
    """Tell load tests how much of the latency was the model's, and the app's (Server-Timing, in ms).

    A streamed reply adds ``llm-first``: how long the model took to write its first sentence.
    """
    app_ms = (time.perf_counter() - g.started) * 1000 if "started" in g else 0.0
    timing = f"llm;dur={llm_seconds * 1000:.1f}, app;dur={app_ms:.1f}"
    if first_sentence_seconds is not None:
        timing += f", llm-first;dur={first_sentence_seconds * 1000:.1f}"
    response.headers["Server-Timing"] = timing
    return response


def start_timing() -> None:
    g.started = time.perf_counter()


def conversation_of(platform: str) -> "Conversation":
    """The Conversation the factory built for ``platform`` (its name in ``voicebot.platforms``)."""
    return runtime().conversations[platform]

"""One blueprint per webhook contract; each translates its events into the conversation core."""

from __future__ import annotations

import json
import time
from typing import Any

from flask import g, request

from ..exceptions import InvalidEvent


def json_body() -> dict[str, Any]:
    """The request body as a JSON object, whatever Content-Type the sender set."""
    raw = request.get_data(cache=True)  # 413 above MAX_CONTENT_LENGTH, from Werkzeug
    if not raw.strip():
        raise InvalidEvent("the body is empty; send a JSON object")
    try:
        body = json.loads(raw)
    except ValueError:
        raise InvalidEvent("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise InvalidEvent(f"the body must be a JSON object, not {type(body).__name__}")
    return body


def with_llm_timing(response, llm_seconds: float):
    """Tell load tests how much of the latency was the model's, and the app's (Server-Timing, in ms)."""
    app_ms = (time.perf_counter() - g.started) * 1000 if "started" in g else 0.0
    response.headers["Server-Timing"] = f"llm;dur={llm_seconds * 1000:.1f}, app;dur={app_ms:.1f}"
    return response


def start_timing() -> None:
    g.started = time.perf_counter()

"""Reading webhook bodies: JSON objects with typed, bounded fields, or InvalidEvent."""

from __future__ import annotations

import json
from typing import Any

from flask import request

from .exceptions import InvalidEvent

MAX_ID_CHARS = 128


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


def required_text(body: dict[str, Any], field: str, max_chars: int) -> str:
    value = body.get(field)
    if value is None:
        raise InvalidEvent(f"'{field}' is missing")
    if not isinstance(value, str):
        raise InvalidEvent(f"'{field}' must be a string")
    value = value.strip()
    if not value:
        raise InvalidEvent(f"'{field}' is empty")
    if len(value) > max_chars:
        raise InvalidEvent(f"'{field}' is longer than {max_chars} characters")
    return value


def identifier(body: dict[str, Any], field: str) -> str:
    value = required_text(body, field, MAX_ID_CHARS)
    if not value.isprintable():
        raise InvalidEvent(f"'{field}' contains control characters")
    return value


def optional_text(body: dict[str, Any], field: str, max_chars: int) -> str | None:
    value = body.get(field)
    if value is None or value == "":
        return None
    return required_text(body, field, max_chars)

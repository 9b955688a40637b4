"""Typed, bounded fields of webhook bodies, or InvalidEvent that says what is wrong."""

from __future__ import annotations

from typing import Any

from ..exceptions import InvalidEvent

MAX_ID_CHARS = 128


def required_text(body: dict[str, Any], field: str, max_chars: int) -> str:
    value = body.get(field)
    if value is None:
        raise InvalidEvent(f"'{field}' is missing")
    if not isinstance(value, str):
        raise InvalidEvent(f"'{field}' must be a string")
    if not _is_unicode_text(value):
        # A lone surrogate ("\\ud800") is valid JSON but no character: kept, it
        # would make every later request of the call fail to encode.
        raise InvalidEvent(f"'{field}' is not valid Unicode text")
    value = value.strip()
    if not value:
        raise InvalidEvent(f"'{field}' is empty")
    if len(value) > max_chars:
        raise InvalidEvent(f"'{field}' is longer than {max_chars} characters")
    return value


def _is_unicode_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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


def json_object(body: dict[str, Any], field: str) -> dict[str, Any]:
    value = body.get(field)
    if not isinstance(value, dict):
        raise InvalidEvent(f"'{field}' must be a JSON object")
    return value

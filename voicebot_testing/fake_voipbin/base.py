"""What every part of the fake VoIPBin shares: ids, JSON as Go writes it, VoIPBin's error, its paging."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

CUSTOMER_ID = "5e4a0680-804e-11ec-8477-2fea5968d85b"
NIL_UUID = "00000000-0000-0000-0000-000000000000"
CUSTOMER_FIELDS = ("name", "detail", "email", "phone_number", "address", "webhook_method", "webhook_uri")

_REASONS = {400: "BAD_REQUEST", 401: "UNAUTHORIZED", 404: "NOT_FOUND", 409: "ALREADY_EXISTS",
            429: "RATE_LIMITED", 500: "INTERNAL_ERROR"}

Json = dict[str, Any]  # a JSON object, as VoIPBin sends and takes them


class ApiError(Exception):
    """A VoIPBin error answer: its status, reason and message, in VoIPBin's envelope."""

    def __init__(self, status: int, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason or _REASONS.get(status, "ERROR")


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def go_json(value: Any) -> bytes:
    """JSON as Go's encoding/json writes it: compact, HTML characters and U+2028/9 escaped, UTF-8."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                          ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escaped)
    return text.encode()


def page(items: list[Json], query: Json) -> Json:
    size = int(query.get("page_size", ["100"])[0])
    start = int(query.get("page_token", ["0"])[0] or 0)
    page = items[start:start + size]
    return {"result": page, "next_page_token": str(start + size) if start + size < len(items) else ""}

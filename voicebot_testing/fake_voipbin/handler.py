"""The fake VoIPBin's HTTP side: authorization, faults a test asked for, routing, VoIPBin's error body."""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from ..loopback import JSONHandler
from .base import ApiError, Json


class Api(Protocol):
    """What the handler asks of the fake (``FakeVoipbin``)."""

    lock: threading.Lock
    latency: float
    retry_after: int
    requests: list[tuple[str, str]]

    def authorized(self, query: Json, cookie: str) -> bool: ...

    def fault(self, action: str) -> str | None: ...

    def pause(self, seconds: float) -> None: ...

    def handle_api(self, method: str, path: str, query: Json, body: Any) -> tuple[int, Any]: ...


class Handler(JSONHandler):
    """One request to the fake's REST API, answered as VoIPBin does."""

    server: Api  # type: ignore[assignment]

    def _dispatch(self, method: str) -> None:
        raw = self.read_body()
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if not url.path.startswith("/v1.0/"):
            return self._error(ApiError(404, "not found"))
        if not self.server.authorized(query, self.headers.get("Cookie", "")):
            return self._error(ApiError(401, "unauthorized"))
        if self.server.latency:
            self.server.pause(self.server.latency)
        path = url.path[len("/v1.0"):]
        action = path.rsplit("/", 1)[-1]
        fault = self.server.fault(action)
        if fault == "hang":
            self.server.pause(60)
            self.close_connection = True
            return None
        if fault == "fail":
            return self._error(ApiError(500, "internal error"))
        if fault == "limit":
            return self._error(ApiError(429, "too many requests"), **{"Retry-After": str(self.server.retry_after)})
        with self.server.lock:
            self.server.requests.append((method, path + ("?" + url.query if url.query else "")))
        try:
            body = json.loads(raw) if raw else {}
            status, payload = self.server.handle_api(method, path, query, body)
        except ValueError:
            return self._error(ApiError(400, "body is not JSON"))
        except ApiError as exc:
            return self._error(exc)
        if fault == "lose":  # done, but the answer never arrives
            self.server.pause(60)
            self.close_connection = True
            return None
        self.send_json(status, payload)
        return None

    def _error(self, exc: ApiError, **headers: str) -> None:
        self.send_json(exc.status, {"error": {"status": exc.status, "reason": exc.reason, "message": str(exc),
                                              "request_id": str(uuid.uuid4())}}, **headers)

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

"""twilio-python's HTTP client on voicebot's egress layer: the Calls API's requests bounded, capped and never
redirected like every other request voicebot makes (twilio-python keeps its auth, form encoding and errors)."""

from __future__ import annotations

import base64
import json
import logging
from urllib.parse import urlencode, urlsplit

from twilio.base.exceptions import TwilioException  # type: ignore[import-untyped]
from twilio.http import HttpClient  # type: ignore[import-untyped]
from twilio.http.response import Response  # type: ignore[import-untyped]

from ..deadline import within
from ..egress import HTTP, EgressError

# A Calls API answer is a call's JSON: a few kB.
MAX_ANSWER_BYTES = 1024 * 1024


class EgressHttpClient(HttpClient):  # type: ignore[misc]
    """The ``http_client`` twilio-python's ``Client`` is given: one request per call, within ``timeout``."""

    def __init__(self, timeout: float) -> None:
        super().__init__(logger=logging.getLogger("twilio.http_client"), is_async=False, timeout=timeout)
        self.http = HTTP(pool_size=16)

    def request(self, method: str, url: str, params: dict[str, object] | None = None,
                data: dict[str, object] | None = None, headers: dict[str, str] | None = None,
                auth: tuple[str, str] | None = None, timeout: float | None = None,
                allow_redirects: bool = False) -> Response:
        sent = dict(headers or {})
        body: bytes | None = None
        if data is not None:
            if sent.get("Content-Type") in ("application/json", "application/scim+json"):
                body = json.dumps(data).encode()
            else:
                body = urlencode(data, doseq=True).encode()
                sent.setdefault("Content-Type", "application/x-www-form-urlencoded")
        if auth is not None:
            sent["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        target = url + ("?" + urlencode(params, doseq=True) if params else "")
        try:
            with within(timeout or self.timeout or 10.0):
                # Never redirected, whatever allow_redirects says: the account's key would follow a Location.
                answer = self.http.request(method.upper(), target, body=body, headers=sent, limit=MAX_ANSWER_BYTES)
        except EgressError as exc:
            raise TwilioException(f"{urlsplit(url).netloc}: {exc}") from None  # no path: it names the account
        self.last_response = Response(answer.status, answer.body.decode("utf-8", "replace"), dict(answer.headers))
        return self.last_response

    def close(self) -> None:
        self.http.close()

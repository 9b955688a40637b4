"""A small client for the parts of VoIPBin's REST API that a voice agent needs.

One ``requests.Session`` per process (connection reuse to the API), connect
and read timeouts on every request, each capped by the webhook's deadline,
and requests' errors mapped into voicebot's exceptions.

The access key travels as the ``accesskey`` cookie, which VoIPBin accepts as
well as the query parameter its Go SDK uses: a URL is printed by proxies and
by libraries' own warnings (urllib3's retry warning prints it whole), a
cookie header is not. No error message here carries a URL or a header.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from ..deadline import Deadline, unbounded
from .exceptions import VoipbinError, VoipbinRateLimited, VoipbinRejected, VoipbinUnavailable

log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://api.voipbin.net/v1.0"
# A request needs at least this much of the budget to be worth sending.
MIN_REQUEST_SECONDS = 0.25
# Longest Retry-After honoured in place; a longer one goes back to the platform as a 503.
MAX_RATE_LIMIT_WAIT = 3.0
# GET /speakings lists the whole account, newest first: a call's own session is on the first pages.
MAX_LIST_PAGES = 5


class VoipbinClient:
    def __init__(self, api_url: str, access_key: str, *, connect_timeout: float = 1.0,
                 read_timeout: float = 3.0, session: requests.Session | None = None) -> None:
        self.api_url = api_url.rstrip("/")
        self._cookies = {"accesskey": access_key}
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._session = session or requests.Session()
        # A connection that could not be made sent nothing, so trying it again
        # is safe for every request; anything that may have reached VoIPBin is
        # not repeated here (the caller knows whether doing it twice is harmless).
        retry = Retry(total=None, connect=1, read=0, status=0, other=0, redirect=0, backoff_factor=0.1)
        adapter = HTTPAdapter(max_retries=retry, pool_maxsize=64)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)

    def close(self) -> None:
        self._session.close()

    # -- the one way requests are made ---------------------------------------------

    def request(self, method: str, path: str, body: dict[str, Any] | None = None, *,
                params: dict[str, Any] | None = None, deadline: Deadline | None = None) -> Any:
        """Send one request and return its JSON answer; 429s are waited out while the deadline allows."""
        deadline = deadline or unbounded()
        what = f"{method} {path}"
        while True:
            read_timeout = deadline.cap(self.read_timeout, keep=self.connect_timeout)
            if read_timeout < MIN_REQUEST_SECONDS:
                raise VoipbinUnavailable(f"{what}: no time left in this webhook's budget")
            response = self._send(method, path, body, params, (self.connect_timeout, read_timeout), what)
            if response.status_code != 429:
                return _answer(response, what)
            wait = _retry_after(response)
            if wait > MAX_RATE_LIMIT_WAIT or not deadline.allows(wait + self.connect_timeout + self.read_timeout):
                raise VoipbinRateLimited(f"{what}: HTTP 429 rate limited, retry after {wait:g}s", wait)
            log.info("%s: rate limited by VoIPBin, retrying in %.1fs", what, wait)
            time.sleep(wait)

    def _send(self, method: str, path: str, body: Any, params: Any, timeout: tuple[float, float],
              what: str) -> requests.Response:
        try:
            # Never redirected: the access key would go wherever a Location header points.
            return self._session.request(method, self.api_url + path, params=params, json=body,
                                         cookies=self._cookies, timeout=timeout, allow_redirects=False)
        except requests.ConnectTimeout:
            raise VoipbinUnavailable(f"{what}: could not connect (timed out)") from None
        except requests.Timeout:
            raise VoipbinUnavailable(f"{what}: no answer in time", maybe_done=True) from None
        except requests.ConnectionError as exc:
            sent = not _never_connected(exc)
            raise VoipbinUnavailable(f"{what}: {'connection lost' if sent else 'could not connect'}",
                                     maybe_done=sent) from None
        except requests.RequestException as exc:
            raise VoipbinUnavailable(f"{what}: {type(exc).__name__}", maybe_done=True) from None

    def list_all(self, path: str, params: dict[str, Any], *, deadline: Deadline | None = None) -> list[dict[str, Any]]:
        """Every item of a paginated list (``{"result": [...], "next_page_token": ...}``), within bounds."""
        items: list[dict[str, Any]] = []
        params = {**params, "page_size": 100}
        for _ in range(MAX_LIST_PAGES):
            page = self.request("GET", path, params=params, deadline=deadline)
            result = page.get("result") if isinstance(page, dict) else None
            if not isinstance(result, list):
                raise VoipbinError(f"GET {path}: the answer has no result list")
            items.extend(item for item in result if isinstance(item, dict))
            token = page.get("next_page_token")
            if not result or not token:
                break
            params["page_token"] = token
        return items

    # -- transcription -------------------------------------------------------------

    def start_transcribe(self, call_id: str, language: str, *, deadline: Deadline | None = None) -> str:
        """Transcribe what the caller says; the id names later transcript events."""
        return _id_of(self.request("POST", "/transcribes", {
            "reference_type": "call", "reference_id": call_id, "language": language, "direction": "in",
        }, deadline=deadline), "POST /transcribes")

    def transcribes_of(self, call_id: str, *, deadline: Deadline | None = None) -> list[dict[str, Any]]:
        return self.list_all("/transcribes", {"reference_type": "call", "reference_id": call_id}, deadline=deadline)

    def stop_transcribe(self, transcribe_id: str, *, deadline: Deadline | None = None) -> None:
        self._idempotent(f"/transcribes/{transcribe_id}/stop", deadline)

    # -- speech --------------------------------------------------------------------

    def start_speaking(self, call_id: str, language: str, provider: str, voice_id: str, *,
                       deadline: Deadline | None = None) -> str:
        """A streaming speech session into the call, for the bot's replies."""
        body = {"reference_type": "call", "reference_id": call_id, "language": language, "direction": "out"}
        if provider:
            body["provider"] = provider
        if voice_id:
            body["voice_id"] = voice_id
        return _id_of(self.request("POST", "/speakings", body, deadline=deadline), "POST /speakings")

    def speakings_of(self, call_id: str, *, deadline: Deadline | None = None) -> list[dict[str, Any]]:
        """The call's speaking sessions: VoIPBin lists the account's, with no filter by call."""
        return [s for s in self.list_all("/speakings", {}, deadline=deadline)
                if s.get("reference_type", "call") == "call" and s.get("reference_id") == call_id]

    def say(self, speaking_id: str, text: str, *, deadline: Deadline | None = None) -> None:
        self.request("POST", f"/speakings/{speaking_id}/say", {"text": text}, deadline=deadline)

    def flush(self, speaking_id: str, *, deadline: Deadline | None = None) -> None:
        """Drop what is queued to be said: the caller has started talking over the bot."""
        self._idempotent(f"/speakings/{speaking_id}/flush", deadline)

    def stop_speaking(self, speaking_id: str, *, deadline: Deadline | None = None) -> None:
        self._idempotent(f"/speakings/{speaking_id}/stop", deadline)

    # -- calls ---------------------------------------------------------------------

    def hang_up(self, call_id: str, *, deadline: Deadline | None = None) -> None:
        self._idempotent(f"/calls/{call_id}/hangup", deadline)

    def _idempotent(self, path: str, deadline: Deadline | None) -> None:
        """Stop, flush, hang up: asking twice is harmless, so one retry rides out a blip."""
        try:
            self.request("POST", path, deadline=deadline)
        except VoipbinRateLimited:
            raise
        except VoipbinUnavailable:
            self.request("POST", path, deadline=deadline)


def _answer(response: requests.Response, what: str) -> Any:
    status = response.status_code
    if status >= 500:
        raise VoipbinUnavailable(f"{what}: HTTP {status}{_reason(response)}", maybe_done=True)
    if status >= 400:
        raise VoipbinRejected(f"{what}: HTTP {status}{_reason(response)}", status)
    if status >= 300:
        raise VoipbinError(f"{what}: HTTP {status}, a redirect, which is not followed")
    try:
        return response.json() if response.content else {}
    except ValueError:
        raise VoipbinError(f"{what}: the answer is not JSON") from None


def _id_of(created: Any, what: str) -> str:
    if not isinstance(created, dict) or not isinstance(created.get("id"), str) or not created["id"]:
        raise VoipbinError(f"{what}: the answer has no id")
    return str(created["id"])


def _retry_after(response: requests.Response) -> float:
    try:
        return max(0.0, float(response.headers.get("Retry-After", "1")))
    except ValueError:
        return 1.0


def _never_connected(exc: requests.ConnectionError) -> bool:
    """True when the connection was never made, so nothing was sent."""
    reason = getattr(exc.args[0] if exc.args else None, "reason", None)
    return type(reason).__name__ in ("NewConnectionError", "NameResolutionError", "ConnectTimeoutError")


def _reason(response: requests.Response) -> str:
    """VoIPBin's error envelope ``{"error": {"status", "reason", "message", "request_id"}}``, in a few words."""
    try:
        body = response.json()
    except ValueError:
        return ""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        parts = [str(error[k]) for k in ("reason", "message") if error.get(k)]
        if error.get("request_id"):
            parts.append(f"request_id={error['request_id']}")
        return (" " + " ".join(parts))[:300] if parts else ""
    message = body.get("message") if isinstance(body, dict) else None
    return f" {str(message)[:200]}" if message else ""

"""A small client for the parts of VoIPBin's REST API that a voice agent needs.

Requests go through voicebot's egress layer (voicebot/egress): kept-alive
connections shared by a worker's threads, the whole request held to its
timeout (the lookup, connecting and every read together), each capped by the
webhook's deadline, the answer by MAX_ANSWER_BYTES, proxies as the
environment names them. The errors are mapped into voicebot's exceptions, a
redirect is never followed, and nothing that may have reached VoIPBin is
sent again here (the caller knows whether doing it twice is harmless).

The access key travels as the ``accesskey`` cookie, which VoIPBin accepts as
well as the query parameter its Go SDK uses: a URL is printed by proxies and
by libraries' own warnings (urllib3's retry warning prints it whole), a
cookie header is not. No error message here carries a URL or a header.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import quote, urlencode

from .. import compact_json
from ..deadline import Deadline, unbounded, within
from ..egress import HTTP, BodyTooLarge, EgressError, EgressTimeout, Response
from .exceptions import VoipbinError, VoipbinRateLimited, VoipbinRejected, VoipbinUnavailable

log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://api.voipbin.net/v1.0"
# A request needs at least this much of the budget to be worth sending.
MIN_REQUEST_SECONDS = 0.25
# Longest Retry-After honoured in place; a longer one goes back to the platform as a 503.
MAX_RATE_LIMIT_WAIT = 3.0
# GET /speakings lists the whole account, newest first: a call's own session is on the first pages.
MAX_LIST_PAGES = 5
# The most an answer may be: a page of 100 speakings is some tens of kB; past this it is not VoIPBin answering.
MAX_ANSWER_BYTES = 2 * 1024 * 1024


class VoipbinClient:
    """One VoIPBin account's REST API: transcribes, speakings, calls; JSON in and out, errors mapped.

    Shared by a worker's threads. Every request is bounded by its timeouts and
    by the deadline it is given; what it may have done when it fails is said by
    ``VoipbinUnavailable.maybe_done``.
    """

    def __init__(self, api_url: str, access_key: str, *, connect_timeout: float = 1.0,
                 read_timeout: float = 3.0) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._http = HTTP(headers={"Cookie": f"accesskey={access_key}", "Accept": "application/json",
                                   "User-Agent": "voicebot"}, pool_size=64)
        self.api_url = api_url

    @property
    def api_url(self) -> str:
        return self._api_url

    @api_url.setter
    def api_url(self, url: str) -> None:
        """Where the requests go from now on."""
        self._api_url = url.rstrip("/")

    def close(self) -> None:
        self._http.close()

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
            response = self._send(method, path, body, params, self.connect_timeout + read_timeout, what)
            if response.status != 429:
                return _answer(response, what)
            wait = _retry_after(response)
            if wait > MAX_RATE_LIMIT_WAIT or not deadline.allows(wait + self.connect_timeout + self.read_timeout):
                raise VoipbinRateLimited(f"{what}: HTTP 429 rate limited, retry after {wait:g}s", wait)
            log.info("%s: rate limited by VoIPBin, retrying in %.1fs", what, wait)
            time.sleep(wait)

    def _send(self, method: str, path: str, body: Any, params: Any, seconds: float, what: str) -> Response:
        url = self._api_url + path + ("?" + urlencode(params) if params else "")
        data = None if body is None else compact_json.dumps(body)
        headers = {"Content-Type": "application/json"} if data is not None else None
        try:
            # Tried once more by the layer only where it cannot be done twice (no connection was made, or a GET);
            # whether a say that may have reached VoIPBin is said again is the caller's to judge.
            with within(seconds):
                return self._http.request(method, url, body=data, headers=headers, limit=MAX_ANSWER_BYTES)
        except EgressError as exc:
            raise _unavailable(exc, what) from None

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
        self._idempotent(f"/transcribes/{_id(transcribe_id)}/stop", deadline)

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
        self.request("POST", f"/speakings/{_id(speaking_id)}/say", {"text": text}, deadline=deadline)

    def flush(self, speaking_id: str, *, deadline: Deadline | None = None) -> None:
        """Drop what is queued to be said: the caller has started talking over the bot."""
        self._idempotent(f"/speakings/{_id(speaking_id)}/flush", deadline)

    def stop_speaking(self, speaking_id: str, *, deadline: Deadline | None = None) -> None:
        self._idempotent(f"/speakings/{_id(speaking_id)}/stop", deadline)

    # -- calls ---------------------------------------------------------------------

    def hang_up(self, call_id: str, *, deadline: Deadline | None = None) -> None:
        self._idempotent(f"/calls/{_id(call_id)}/hangup", deadline)

    def _idempotent(self, path: str, deadline: Deadline | None) -> None:
        """Stop, flush, hang up: asking twice is harmless, so one retry rides out a blip."""
        try:
            self.request("POST", path, deadline=deadline)
        except VoipbinRateLimited:
            raise
        except VoipbinUnavailable:
            self.request("POST", path, deadline=deadline)


def _unavailable(exc: EgressError, what: str) -> VoipbinUnavailable:
    if isinstance(exc, BodyTooLarge):
        return VoipbinUnavailable(f"{what}: {exc}", maybe_done=True)
    if isinstance(exc, EgressTimeout):
        return (VoipbinUnavailable(f"{what}: no answer in time", maybe_done=True) if exc.sent
                else VoipbinUnavailable(f"{what}: could not connect (timed out)"))
    return (VoipbinUnavailable(f"{what}: connection lost", maybe_done=True) if exc.sent
            else VoipbinUnavailable(f"{what}: could not connect"))


def _id(value: str) -> str:
    """An id as one path segment: whatever it holds ('/', '..', '?'), it names nothing else."""
    return quote(value, safe="")


def _answer(response: Response, what: str) -> Any:
    status = response.status
    if status >= 500:
        raise VoipbinUnavailable(f"{what}: HTTP {status}{_reason(response)}", maybe_done=True)
    if status >= 400:
        raise VoipbinRejected(f"{what}: HTTP {status}{_reason(response)}", status)
    if status >= 300:
        raise VoipbinError(f"{what}: HTTP {status}, a redirect, which is not followed")
    try:
        return response.json() if response.body else {}
    except ValueError:
        raise VoipbinError(f"{what}: the answer is not JSON") from None


def _id_of(created: Any, what: str) -> str:
    if not isinstance(created, dict) or not isinstance(created.get("id"), str) or not created["id"]:
        raise VoipbinError(f"{what}: the answer has no id")
    return str(created["id"])


def _retry_after(response: Response) -> float:
    try:
        return max(0.0, float(response.headers.get("retry-after", "1")))
    except ValueError:
        return 1.0


def _reason(response: Response) -> str:
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

"""A small client for the parts of VoIPBin's REST API that a voice agent needs.

One ``requests.Session`` per process (connection reuse to the API), the
access key as the ``accesskey`` query parameter as VoIPBin's Go SDK sends it,
connect and read timeouts on every request, and requests' errors mapped into
voicebot's exceptions. The key is never put into an error message or a log
line: requests' own messages carry the full URL, query included, so they are
not passed on.
"""

from __future__ import annotations

import logging
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from ..exceptions import VoipbinError, VoipbinRejected, VoipbinUnavailable

log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://api.voipbin.net/v1.0"


class VoipbinClient:
    def __init__(self, api_url: str, access_key: str, *, connect_timeout: float = 1.0,
                 read_timeout: float = 4.0, session: requests.Session | None = None) -> None:
        self.api_url = api_url.rstrip("/")
        self._access_key = access_key
        self._timeout = (connect_timeout, read_timeout)
        self._session = session or requests.Session()
        # A connection that could not be made sent nothing, so trying it again
        # is safe for every request; a request that may have reached VoIPBin
        # is repeated only where doing it twice changes nothing (_idempotent).
        # Kept to one retry so that a say stays well inside the call's lock lease.
        retry = Retry(total=None, connect=1, read=0, status=0, other=0, redirect=0, backoff_factor=0.1)
        adapter = HTTPAdapter(max_retries=retry, pool_maxsize=64)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)

    def close(self) -> None:
        self._session.close()

    def _post(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        what = f"POST {path}"
        try:
            response = self._session.post(self.api_url + path, params={"accesskey": self._access_key},
                                          json=body or {}, timeout=self._timeout)
        except requests.Timeout:
            raise VoipbinUnavailable(f"{what}: timed out") from None
        except requests.RequestException as exc:
            raise VoipbinUnavailable(f"{what}: {type(exc).__name__}") from None
        if response.status_code >= 500:
            raise VoipbinUnavailable(f"{what}: HTTP {response.status_code}")
        if response.status_code >= 400:
            raise VoipbinRejected(f"{what}: HTTP {response.status_code} {_reason(response)}",
                                  response.status_code)
        try:
            return response.json() if response.content else {}
        except ValueError:
            raise VoipbinError(f"{what}: the answer is not JSON") from None

    def _idempotent(self, path: str) -> None:
        """Stop, flush: asking twice is harmless, so one retry rides out a blip."""
        try:
            self._post(path)
        except VoipbinUnavailable:
            self._post(path)

    def _created_id(self, path: str, body: dict[str, Any]) -> str:
        created = self._post(path, body)
        if not isinstance(created.get("id"), str) or not created["id"]:
            raise VoipbinError(f"POST {path}: the answer has no id")
        return created["id"]

    def start_transcribe(self, call_id: str, language: str) -> str:
        """Transcribe what the caller says; the id names later transcript events."""
        return self._created_id("/transcribes", {
            "reference_type": "call", "reference_id": call_id, "language": language, "direction": "in",
        })

    def stop_transcribe(self, transcribe_id: str) -> None:
        self._idempotent(f"/transcribes/{transcribe_id}/stop")

    def start_speaking(self, call_id: str, language: str, provider: str, voice_id: str) -> str:
        """A streaming speech session into the call, for the bot's replies."""
        body = {"reference_type": "call", "reference_id": call_id, "language": language, "direction": "out"}
        if provider:
            body["provider"] = provider
        if voice_id:
            body["voice_id"] = voice_id
        return self._created_id("/speakings", body)

    def say(self, speaking_id: str, text: str) -> None:
        self._post(f"/speakings/{speaking_id}/say", {"text": text})

    def flush(self, speaking_id: str) -> None:
        """Drop what is queued to be said: the caller has started talking over the bot."""
        self._idempotent(f"/speakings/{speaking_id}/flush")

    def stop_speaking(self, speaking_id: str) -> None:
        self._idempotent(f"/speakings/{speaking_id}/stop")


def _reason(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    message = body.get("message") or body.get("error") if isinstance(body, dict) else None
    return str(message)[:200] if message else ""

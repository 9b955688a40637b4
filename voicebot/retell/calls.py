"""Retell's call API, asked one thing: is this call one of the account's, and is it live?

Retell does not sign its custom-LLM socket: a socket names a call id, and nothing in it proves Retell
opened it. Retell's REST API knows every call of the account (``GET /v2/get-call/{call_id}``, the API
key as a bearer token), so a socket is served only for a call that answer says is registered or ongoing;
the same answer gives the numbers and the dynamic variables the call was started with. Requests go
through voicebot's egress layer (the deadline, a capped answer, no redirect followed).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from ..deadline import Deadline, within
from ..egress import HTTP, EgressError
from ..exceptions import VoicebotError

log = logging.getLogger(__name__)

# A call's object is a few kB (its transcript grows it while it lasts); past this it is not Retell answering.
MAX_ANSWER_BYTES = 1024 * 1024
REQUEST_SECONDS = 3.0
# Retell's call_status values of a call that is still to be served ("registered": its id given, starting).
LIVE_STATUSES = ("registered", "ongoing")
MAX_VARIABLES = 100
MAX_VALUE_CHARS = 2_000


class RetellUnavailable(VoicebotError):
    """Retell's API could not say (down, slow, an answer that is not a call): the socket is refused, for now."""


@dataclass(frozen=True)
class RetellCall:
    """What Retell's API says of a call."""

    call_id: str
    status: str
    direction: str = "inbound"
    from_number: str | None = None
    to_number: str | None = None
    variables: dict[str, str] = field(default_factory=dict)
    disconnection_reason: str | None = None

    @property
    def live(self) -> bool:
        return self.status in LIVE_STATUSES

    @property
    def caller(self) -> str | None:
        """The person on the line: who called in, or whom an outbound call reached."""
        return self.to_number if self.direction == "outbound" else self.from_number

    @property
    def called(self) -> str | None:
        return self.from_number if self.direction == "outbound" else self.to_number


def call_from(data: Any) -> RetellCall | None:
    """A call object (the API's answer, a webhook's ``call``) as a RetellCall; None if it is not one."""
    if not isinstance(data, dict) or not isinstance(data.get("call_id"), str) or not data["call_id"]:
        return None
    raw = data.get("retell_llm_dynamic_variables")
    variables = {str(k)[:64]: str(v)[:MAX_VALUE_CHARS] for k, v in list(raw.items())[:MAX_VARIABLES]
                 if isinstance(v, (str, int, float))} if isinstance(raw, dict) else {}

    def number(name: str) -> str | None:
        value = data.get(name)
        return value[:64] if isinstance(value, str) and value else None

    reason = data.get("disconnection_reason")
    return RetellCall(data["call_id"], str(data.get("call_status", "")), str(data.get("direction") or "inbound"),
                      number("from_number"), number("to_number"), variables,
                      reason[:64] if isinstance(reason, str) else None)


class RetellCalls:
    """One Retell account's calls, as its API answers for them. Shared by a worker's threads."""

    def __init__(self, api_url: str, api_key: str) -> None:
        self.api_url = api_url.rstrip("/")
        self._http = HTTP(headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json",
                                   "User-Agent": "voicebot"}, pool_size=16)

    def close(self) -> None:
        self._http.close()

    def lookup(self, call_id: str, deadline: Deadline) -> RetellCall | None:
        """The call as Retell knows it; None when Retell does not know it (404); RetellUnavailable otherwise."""
        seconds = deadline.cap(REQUEST_SECONDS)
        if seconds < 0.25:
            raise RetellUnavailable("no time left to ask Retell's API about the call")
        url = f"{self.api_url}/v2/get-call/{quote(call_id, safe='')}"
        try:
            with within(seconds):
                answer = self._http.request("GET", url, limit=MAX_ANSWER_BYTES)
        except EgressError as exc:
            raise RetellUnavailable(f"GET /v2/get-call: {type(exc).__name__}") from None
        if answer.status in (404, 422):
            return None
        if answer.status in (401, 403):
            raise RetellUnavailable(f"GET /v2/get-call: HTTP {answer.status}: RETELL_API_KEY is not the account's")
        if not answer.ok:
            raise RetellUnavailable(f"GET /v2/get-call: HTTP {answer.status}")
        try:
            call = call_from(answer.json())
        except ValueError:
            call = None
        if call is None or call.call_id != call_id:
            raise RetellUnavailable("GET /v2/get-call: the answer is not this call")
        return call

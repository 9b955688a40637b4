"""Caller context: who is calling, asked of the operator's own system once per call, before the greeting.

With CONTEXT_URL set, at a call's start voicebot POSTs
``{call_id, platform, caller, called, direction, variables}`` there, signed
like every request to the operator's systems (``X-Voicebot-Signature``, keyed
by CONTEXT_SECRET), and takes back ``{"variables": {...}, "instructions":
"..."}``: the variables fill the ``{{placeholders}}`` of the greeting and the
system prompt, the instructions are added to the system prompt for this call.
The answer is kept in the call's session, so it is asked once per call, not
again on a redelivery or after a restart. Slow, failing or malformed, the
call goes on with the defaults and the log says why: the caller is greeted in
time whatever the operator's system does.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, TypedDict
from urllib.parse import urlsplit

from .exceptions import ConfigError
from .operator_tools import address_policy
from .egress import HTTP, AddressPolicy, BodyTooLarge, EgressError, EgressTimeout, operator_url_problem
from .placeholders import clean_variables
from .signing import VOICEBOT_HEADER, sign

log = logging.getLogger(__name__)

MAX_ANSWER_BYTES = 16_384
MAX_INSTRUCTIONS_CHARS = 4000
# Below this there is no point asking: a connection alone takes longer.
SHORTEST_ASK = 0.1


class KeptContext(TypedDict):
    """What the session and the record keep of the answer: what it gave, or why it gave nothing."""

    variables: dict[str, str]
    instructions: str
    error: str | None
    seconds: float


@dataclass(frozen=True)
class CallFacts:
    """What voicebot knows of a call when it starts, as the context endpoint is told it."""

    call_id: str
    platform: str
    caller: str | None = None
    called: str | None = None
    direction: str = "inbound"
    variables: Mapping[str, str] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        return {"call_id": self.call_id, "platform": self.platform, "caller": self.caller, "called": self.called,
                "direction": self.direction, "variables": dict(self.variables)}


class ContextSource:
    """Asks CONTEXT_URL about a call: never raises, never waits past its budget."""

    def __init__(self, url: str, secret: str, *, timeout: float, policy: AddressPolicy | None = None) -> None:
        self.url = url
        self.secret = secret
        self.timeout = timeout
        self.where = urlsplit(url).netloc  # only the host in logs: the URL may carry a token
        self.http = HTTP(policy=policy or AddressPolicy(), pool_size=32)

    def ask(self, facts: CallFacts, budget: float) -> KeptContext:
        """The context of the call, within ``min(timeout, budget)`` seconds; empty, with the reason, otherwise."""
        started = time.monotonic()
        seconds = min(self.timeout, budget)
        if seconds < SHORTEST_ASK:
            return self._without(facts, "not asked: no time was left before the greeting", started)
        raw = json.dumps(facts.body(), separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", VOICEBOT_HEADER: sign(raw, self.secret)}
        try:
            answer = self.http.request("POST", self.url, body=raw, headers=headers, limit=MAX_ANSWER_BYTES,
                                       cutoff=self.http.cutoff(seconds))
        except EgressTimeout:
            return self._without(facts, f"no answer within {seconds:.1f} s", started)
        except BodyTooLarge:
            return self._without(facts, f"answered with more than {MAX_ANSWER_BYTES} bytes", started)
        except EgressError as exc:
            return self._without(facts, str(exc), started)
        if answer.redirect:
            return self._without(facts, f"answered with a redirect (HTTP {answer.status}), which is not followed",
                                 started)
        if not answer.ok:
            return self._without(facts, f"answered HTTP {answer.status}", started)
        try:
            variables, instructions = _read(answer.body)
        except ValueError as exc:
            return self._without(facts, f"answered with what voicebot cannot use: {exc}", started)
        took = round(time.monotonic() - started, 3)
        log.info("caller context call_id=%s: %d variable(s)%s in %.0f ms", facts.call_id, len(variables),
                 ", instructions" if instructions else "", took * 1000)
        log.debug("caller context call_id=%s variables=%r instructions=%r", facts.call_id, variables, instructions)
        return {"variables": variables, "instructions": instructions, "error": None, "seconds": took}

    def _without(self, facts: CallFacts, why: str, started: float) -> KeptContext:
        log.warning("caller context not used call_id=%s (%s): %s; the call goes on with the defaults",
                    facts.call_id, self.where, why)
        return {"variables": {}, "instructions": "", "error": why,
                "seconds": round(time.monotonic() - started, 3)}

    def close(self) -> None:
        self.http.close()


def _read(body: bytes) -> tuple[dict[str, str], str]:
    try:
        answer = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError):
        raise ValueError("not JSON (in UTF-8)") from None
    if not isinstance(answer, dict):
        raise ValueError("not a JSON object")
    variables = clean_variables(answer.get("variables"), "variables")
    instructions = answer.get("instructions", "")
    if instructions is None:
        instructions = ""
    if not isinstance(instructions, str):
        raise ValueError("instructions must be text")
    if len(instructions) > MAX_INSTRUCTIONS_CHARS:
        raise ValueError(f"instructions are longer than {MAX_INSTRUCTIONS_CHARS} characters")
    return variables, instructions.strip()


def check_settings(settings: Mapping[str, Any]) -> None:
    """CONTEXT_URL must be reachable under the address policy, signed, and quick enough for a greeting."""
    if not settings["CONTEXT_URL"]:
        return
    problem = operator_url_problem(settings["CONTEXT_URL"], address_policy(settings))
    if problem:
        raise ConfigError(f"CONTEXT_URL {problem}")
    if not settings["CONTEXT_SECRET"]:
        raise ConfigError("CONTEXT_URL needs CONTEXT_SECRET: context requests carry a signature it checks")
    if settings["CONTEXT_TIMEOUT_SECONDS"] > 5:
        raise ConfigError("CONTEXT_TIMEOUT_SECONDS must be at most 5: the caller waits for the greeting")

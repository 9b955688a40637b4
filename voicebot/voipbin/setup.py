"""``voicebot voipbin setup``: point a VoIPBin account at voicebot, losing nothing, changing nothing twice.

1. The customer's webhook: ``PUT /customer`` writes all seven of its fields,
   so the customer is read first and every field is sent back as it was, with
   only the webhook changed.
2. A flow named ``voicebot`` whose one action is ``fetch`` to voicebot: the
   call is handed over before it is answered, and voicebot's answer keeps it
   up (see ``VoipbinBridge.flow_actions``).
3. That flow attached to each number as its call flow (the message flow kept).

Each step reads first and writes only what differs, so a second run changes
nothing; ``dry_run`` reports what would change and writes nothing.
"""

from __future__ import annotations

import functools
import secrets
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

from .exceptions import VoipbinError
from .settings import normalize_number
from .client import VoipbinClient

FLOW_NAME = "voicebot"
CUSTOMER_FIELDS = ("name", "detail", "email", "phone_number", "address", "webhook_method", "webhook_uri")


class SetupError(VoipbinError):
    """The account cannot be set up as asked; nothing more was written."""


@dataclass
class SetupResult:
    """What ``voicebot voipbin setup`` found and changed, and the settings voicebot needs for the account."""

    webhook_secret: str = ""
    fetch_token: str = ""
    numbers: list[str] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)  # what was (or, in a dry run, would be) written


def set_up_account(client: VoipbinClient, public_url: str, numbers: list[str], *, fetch_token: str = "",
                   dry_run: bool = False, say: Callable[[str], None] = print) -> SetupResult:
    public_url = public_url.rstrip("/")
    scheme = urlsplit(public_url).scheme
    if scheme not in ("http", "https") or not urlsplit(public_url).hostname:
        raise SetupError(f"--public-url must be an http(s) URL, not {public_url!r}")
    if scheme == "http":
        say("warning: VoIPBin will send events and fetch requests over plain HTTP; use an https URL")
    result = SetupResult()

    def change(what: str, write: Callable[[], Any]) -> Any:
        result.changes.append(what)
        say(("would " if dry_run else "") + what)
        return None if dry_run else write()

    # Numbers first: a typo stops the run before anything is written.
    wanted = [normalize_number(n) for n in numbers]
    owned = {normalize_number(n.get("number", "")): n for n in client.list_all("/numbers", {})}
    missing = [n for n in wanted if n not in owned]
    if missing:
        raise SetupError(f"not numbers of this account: {', '.join(missing)} "
                         f"(it has: {', '.join(sorted(owned)) or 'none'})")
    result.numbers = wanted

    customer = client.request("GET", "/customer")
    absent = [f for f in CUSTOMER_FIELDS if not isinstance(customer.get(f), str)]
    if absent:
        raise SetupError(f"GET /customer did not return {', '.join(absent)}: not writing the customer, "
                         "so as to lose nothing")
    webhook = {"webhook_method": "POST", "webhook_uri": f"{public_url}/webhook/voipbin"}
    if any(customer[k] != v for k, v in webhook.items()):
        body = {f: customer[f] for f in CUSTOMER_FIELDS} | webhook
        change(f"set the account's webhook to POST {webhook['webhook_uri']} (was {customer['webhook_method']} "
               f"{customer['webhook_uri'] or '(none)'}; name, detail, email, phone number and address kept)",
               lambda: client.request("PUT", "/customer", body))
    else:
        say(f"the account's webhook is already POST {webhook['webhook_uri']}")
    result.webhook_secret = str(customer.get("webhook_secret") or "")

    flows = [f for f in client.list_all("/flows", {}) if f.get("name") == FLOW_NAME]
    flow = flows[0] if flows else None
    result.fetch_token = fetch_token or _token_of(flow) or secrets.token_urlsafe(24)
    actions = [{"type": "fetch", "option": {
        "event_url": f"{public_url}/webhook/voipbin/fetch?token={result.fetch_token}", "event_method": "POST"}}]
    flow_body = {"name": FLOW_NAME, "detail": "Hands each call to voicebot, which keeps it up (fetch loop).",
                 "actions": actions}
    if flow is None:
        created = change(f"create the flow {FLOW_NAME!r} that hands calls to {public_url}",
                         lambda: client.request("POST", "/flows", flow_body))
        flow_id = created["id"] if created else "(new flow)"
    else:
        flow_id = flow["id"]
        if _shape(flow.get("actions")) != _shape(actions):
            change(f"update the flow {FLOW_NAME!r} ({flow_id}) to hand calls to {public_url}",
                   lambda: client.request("PUT", f"/flows/{flow_id}", flow_body))
        else:
            say(f"the flow {FLOW_NAME!r} ({flow_id}) already hands calls to {public_url}")

    for number in wanted:
        entry = owned[number]
        if entry.get("call_flow_id") == flow_id:
            say(f"{number} already runs the flow {FLOW_NAME!r}")
            continue
        body = {"call_flow_id": flow_id, "message_flow_id": entry.get("message_flow_id") or ""}
        change(f"attach the flow {FLOW_NAME!r} to {number} (its call flow was {entry.get('call_flow_id')})",
               functools.partial(client.request, "PUT", f"/numbers/{entry['id']}/flow_ids", body))
    return result


def _shape(actions: Any) -> list[tuple[Any, Any]]:
    return [(a.get("type"), a.get("option")) for a in actions or [] if isinstance(a, dict)]


def _token_of(flow: dict[str, Any] | None) -> str:
    """The token in an existing flow's fetch URL: running setup again keeps it."""
    for action in (flow or {}).get("actions") or []:
        url = (action.get("option") or {}).get("event_url", "") if isinstance(action, dict) else ""
        token = parse_qs(urlsplit(url).query).get("token", [""])[0]
        if token:
            return token
    return ""

"""A campaign: its contacts, its rules and what happened to each, as one JSON document, and the steps on it.

Every step here is a pure function of the document and the time, so the same
rules hold on every store and every instance: ``claim`` picks the contacts to
dial now (within the concurrency cap, the calling window, the dialling pace
and any hold a 429 asked for), ``placed`` and ``not_placed`` follow a
dial, ``finished`` takes a call's outcome and decides whether the contact is
tried again. A contact is claimed for an attempt (its attempt counted)
before it is dialled, so no instance dials it twice for that attempt, even
across a crash; one that stays claimed without a call past ``DIAL_STALE``
was lost with its instance, and counts as a failed attempt.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, time as clock_time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# Outcomes worth another attempt (a person may answer later); the others end the contact's turn.
RETRY = frozenset({"busy", "no_answer", "failed"})
OUTCOMES = ("human", "voicemail", "busy", "no_answer", "failed", "cancelled", "not_dialled")
# A contact claimed for a dial with no call after this long was lost with the instance dialling it.
DIAL_STALE = 60.0
# A live call whose end never came back (its record lost) frees its place after this long.
LIVE_LONGEST = 4 * 3600.0
WINDOW = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])-([01][0-9]|2[0-3]|24):([0-5][0-9])$")


# A contact, as the campaign document keeps it: phone, variables, attempts (begun), state (pending,
# dialing, live, done), next_at (epoch seconds: not dialled before), claimed_at, call_id, outcome (the last
# attempt's, or the final one once done), record_id, duration_seconds.
Contact = dict[str, Any]
# A campaign: id, state (running, paused, cancelled, done), created_at, platform, concurrency, attempts (most
# per contact), retry_gap (seconds), window (["09:00", "18:00"] in timezone, or None), timezone, pace (dials a
# second at most, across every instance), tokens and tokens_at (the pace's bucket), hold_until (a 429 asked
# to slow down: no dial before it), contacts, calls (call id -> contact index).
Campaign = dict[str, Any]


@dataclass(frozen=True)
class Rules:
    """How a campaign dials, as ``voicebot campaign start`` takes them."""

    concurrency: int = 4
    attempts: int = 1
    retry_gap: float = 900.0
    window: tuple[str, str] | None = None
    timezone: str = "UTC"
    pace: float = 1.0
    voicemail: str = "message"  # message: VOICEMAIL_MESSAGE is left where the platform can; hangup: not

    def problems(self) -> list[str]:
        mistakes = []
        if not 1 <= self.concurrency <= 1000:
            mistakes.append("concurrency must be 1 to 1000")
        if not 1 <= self.attempts <= 10:
            mistakes.append("attempts must be 1 to 10")
        if not 0 <= self.retry_gap <= 7 * 86400:
            mistakes.append("retry_gap must be 0 to 604800 seconds")
        if not 0.05 <= self.pace <= 20:
            mistakes.append("pace must be 0.05 to 20 dials a second")
        if self.voicemail not in ("message", "hangup"):
            mistakes.append("voicemail must be message or hangup")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            mistakes.append(f"timezone {self.timezone!r} is not an IANA time zone such as Europe/Paris")
        return mistakes


def parse_window(text: str) -> tuple[str, str]:
    """'09:00-18:00' as its two ends; ValueError otherwise."""
    match = WINDOW.match(text.strip())
    if match is None:
        raise ValueError(f"window must be HH:MM-HH:MM such as 09:00-18:00; got {text!r}")
    start, end = text.strip().split("-")
    if start >= end:
        raise ValueError(f"window {text!r} must start before it ends (one day; no window across midnight)")
    return start, end


def new_campaign(platform: str, rules: Rules, contacts: list[tuple[str, dict[str, str]]],
                 now: float | None = None) -> Campaign:
    now = time.time() if now is None else now
    return {"id": "cmp_" + uuid.uuid4().hex[:20], "state": "running", "created_at": now, "platform": platform,
            "concurrency": rules.concurrency, "attempts": rules.attempts, "retry_gap": rules.retry_gap,
            "window": list(rules.window) if rules.window else None, "timezone": rules.timezone,
            "pace": rules.pace, "tokens": min(1.0, rules.pace), "tokens_at": now, "hold_until": 0.0,
            "voicemail": rules.voicemail,
            "contacts": [{"phone": phone, "variables": variables, "attempts": 0, "state": "pending",
                          "next_at": now, "call_id": None, "outcome": None, "record_id": None,
                          "duration_seconds": None} for phone, variables in contacts],
            "calls": {}}


def in_window(campaign: Campaign, now: float) -> bool:
    window = campaign.get("window")
    if not window:
        return True
    local = datetime.fromtimestamp(now, ZoneInfo(campaign["timezone"])).time()
    start = clock_time.fromisoformat(window[0])
    end = clock_time(23, 59, 59, 999999) if window[1] == "24:00" else clock_time.fromisoformat(window[1])
    return start <= local < end


def claim(campaign: Campaign, now: float, most: int) -> list[tuple[int, Contact]]:
    """The contacts to dial now (each marked dialing, its attempt counted), at most ``most``."""
    _sweep(campaign, now)
    if campaign["state"] != "running" or now < campaign.get("hold_until", 0.0) or not in_window(campaign, now):
        return []
    busy = sum(1 for c in campaign["contacts"] if c["state"] in ("dialing", "live"))
    free = campaign["concurrency"] - busy
    # The pace: a bucket of at most one second's dials, refilled as time passes, shared by every instance.
    burst = max(1.0, campaign["pace"])
    tokens = min(burst, campaign["tokens"] + (now - campaign["tokens_at"]) * campaign["pace"])
    wanted = min(free, most, int(tokens))
    if wanted <= 0:
        return []  # the bucket is left as it was: it refills with time alone, so nothing needs writing
    picked: list[tuple[int, Contact]] = []
    for index, contact in enumerate(campaign["contacts"]):
        if contact["state"] == "pending" and contact["next_at"] <= now:
            contact.update(state="dialing", attempts=contact["attempts"] + 1, claimed_at=now, call_id=None)
            picked.append((index, dict(contact)))
            if len(picked) == wanted:
                break
    if picked:
        campaign["tokens"], campaign["tokens_at"] = tokens - len(picked), now
    return picked


def placed(campaign: Campaign, index: int, call_id: str, now: float) -> None:
    """The platform took the call: the contact holds a place until the call's outcome comes (or came already:
    a number that is busy can end the call before its dial returns)."""
    contact = campaign["contacts"][index]
    if contact["state"] != "dialing":
        return  # swept as lost meanwhile
    contact.update(state="live", call_id=call_id)
    campaign["calls"][call_id] = index
    early = campaign.setdefault("early", {}).pop(call_id, None)
    if early is not None:
        finished(campaign, call_id, early["outcome"], now, record_id=early.get("record_id"),
                 duration=early.get("duration"))


def not_placed(campaign: Campaign, index: int, now: float, *, hold: float = 0.0) -> None:
    """The platform refused or failed the dial. With ``hold`` (a 429: nothing was done) the attempt is given
    back and the whole campaign waits ``hold`` seconds; otherwise the attempt failed."""
    contact = campaign["contacts"][index]
    if contact["state"] != "dialing":
        return
    if hold > 0:
        contact.update(state="pending", attempts=contact["attempts"] - 1, next_at=now)
        campaign["hold_until"] = max(campaign.get("hold_until", 0.0), now + hold)
        return
    _after_attempt(campaign, contact, "failed", now)


def finished(campaign: Campaign, call_id: str, outcome: str, now: float, *, record_id: str | None = None,
             duration: float | None = None, phone: str | None = None) -> bool:
    """A campaign call ended with ``outcome``: tried again if the rules say so. False if it was known already.

    A call whose dial has not returned yet (a busy number can end first), or never will (the instance
    dialling it was killed after placing it), is its number's: the contact being dialled with that ``phone``.
    """
    index = campaign["calls"].get(call_id)
    if index is None and phone:
        index = next((i for i, c in enumerate(campaign["contacts"])
                      if c["phone"] == phone and c["state"] == "dialing"), None)
        if index is not None:
            campaign["contacts"][index]["call_id"] = call_id
            campaign["calls"][call_id] = index
    if index is None:
        # Ended before its dial returned: kept until ``placed`` knows whose call it was.
        campaign.setdefault("early", {})[call_id] = {"outcome": outcome, "record_id": record_id, "duration": duration}
        return False
    contact = campaign["contacts"][index]
    if contact.get("call_id") != call_id or contact["state"] not in ("live", "dialing"):
        return False  # told before (a record made twice), or a later attempt is under way
    contact.update(record_id=record_id, duration_seconds=duration)
    _after_attempt(campaign, contact, outcome, now)
    return True


def set_state(campaign: Campaign, action: str) -> str:
    """pause, resume or cancel; the state it leaves. A cancelled campaign's live calls go on to their end."""
    state: str = campaign["state"]
    if state in ("cancelled", "done"):
        return state
    if action == "pause":
        campaign["state"] = "paused"
    elif action == "resume":
        campaign["state"] = "running"
    elif action == "cancel":
        campaign["state"] = "cancelled"
        for contact in campaign["contacts"]:
            if contact["state"] == "pending":
                contact.update(state="done", outcome="not_dialled" if contact["attempts"] == 0
                               else contact.get("outcome") or "cancelled")
    _maybe_done(campaign)
    left: str = campaign["state"]
    return left


def summary(campaign: Campaign) -> dict[str, Any]:
    """What ``voicebot campaign status`` shows: counts by state and by outcome."""
    states: dict[str, int] = {}
    outcomes: dict[str, int] = {}
    for contact in campaign["contacts"]:
        states[contact["state"]] = states.get(contact["state"], 0) + 1
        if contact["state"] == "done" and contact.get("outcome"):
            outcomes[str(contact["outcome"])] = outcomes.get(str(contact["outcome"]), 0) + 1
    total = len(campaign["contacts"])
    return {"campaign_id": campaign["id"], "state": campaign["state"], "platform": campaign["platform"],
            "contacts": total, "done": states.get("done", 0), "live": states.get("live", 0) + states.get("dialing", 0),
            "pending": states.get("pending", 0), "outcomes": outcomes, "concurrency": campaign["concurrency"],
            "window": "-".join(campaign["window"]) if campaign.get("window") else None,
            "timezone": campaign["timezone"]}


def results(campaign: Campaign) -> list[dict[str, Any]]:
    """One row per contact: its outcome (final, or the last attempt's while it is under way), attempts,
    duration, record id and variables."""
    rows = []
    for contact in campaign["contacts"]:
        outcome = contact.get("outcome") or ("not_dialled" if contact["attempts"] == 0 else None)
        rows.append({"phone": contact["phone"], "outcome": outcome, "final": contact["state"] == "done",
                     "attempts": contact["attempts"], "duration_seconds": contact.get("duration_seconds"),
                     "record_id": contact.get("record_id"), "call_id": contact.get("call_id"),
                     "variables": contact.get("variables") or {}})
    return rows


def _after_attempt(campaign: Campaign, contact: Contact, outcome: str, now: float) -> None:
    contact["outcome"] = outcome
    again = (outcome in RETRY and contact["attempts"] < campaign["attempts"]
             and campaign["state"] in ("running", "paused"))
    if again:
        contact.update(state="pending", next_at=now + campaign["retry_gap"])
    else:
        contact["state"] = "done"
    _maybe_done(campaign)


def _sweep(campaign: Campaign, now: float) -> None:
    """Contacts whose dial was lost with its instance, and live calls whose end never came back."""
    for contact in campaign["contacts"]:
        if contact["state"] == "dialing" and now - contact.get("claimed_at", now) > DIAL_STALE:
            _after_attempt(campaign, contact, "failed", now)
        elif contact["state"] == "live" and now - contact.get("claimed_at", now) > LIVE_LONGEST:
            _after_attempt(campaign, contact, "failed", now)


def _maybe_done(campaign: Campaign) -> None:
    if campaign["state"] in ("running", "cancelled") and all(c["state"] == "done" for c in campaign["contacts"]):
        campaign["state"] = "done"

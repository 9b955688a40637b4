"""A campaign: a small head and its contacts, and the steps that change them.

Every step here is a pure function of the campaign and the time, so the same
rules hold on every store and every instance: ``claim`` picks the contacts to
dial now (within the concurrency cap, the calling window, the dialling pace
and any hold a 429 asked for), ``placed`` and ``not_placed`` follow a
dial, ``finished`` takes a call's outcome and decides whether the contact is
tried again. A contact is claimed for an attempt (its attempt counted)
before it is dialled, so no instance dials it twice for that attempt, even
across a crash; one that stays claimed without a call past ``DIAL_STALE``
was lost with its instance, and counts as a failed attempt.

What a step touches does not grow with the campaign: the head holds the
rules, the state, the counts by state and by outcome, and the contacts in
flight (at most the concurrency); a step reads and writes only the contacts
it names, the next never-dialled one by a cursor and those waiting to be
tried again in the order they are due. A 20,000-contact campaign's tick
costs what a 20-contact one's does; only its results read every contact.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, time as clock_time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# The campaign's shape (a head, and its contacts read one by one), as the steps below see it.
from .contacts import Campaign, Contact, ContactList, Contacts, Head

# Outcomes worth another attempt (a person may answer later); the others end the contact's turn.
RETRY = frozenset({"busy", "no_answer", "failed"})
OUTCOMES = ("human", "voicemail", "busy", "no_answer", "failed", "cancelled", "not_dialled")
# A contact claimed for a dial with no call after this long was lost with the instance dialling it.
DIAL_STALE = 60.0
# A live call whose end never came back (its record lost) frees its place after this long.
LIVE_LONGEST = 4 * 3600.0
WINDOW = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])-([01][0-9]|2[0-3]|24):([0-5][0-9])$")


# A dial returns within this (the diallers' own bound is 8 s): pause and cancel wait for the dials under
# way, so that none reaches the platform after they answer.
DIAL_RETURNS = 10.0

__all__ = ["Campaign", "Contact", "ContactList", "Contacts", "Head", "Rules", "claim", "placed", "not_placed",
           "finished", "set_state", "summary", "results", "dialling", "new_campaign", "new_contact", "new_head",
           "from_document", "parse_window", "in_window"]


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


def new_contact(phone: str, variables: dict[str, str]) -> Contact:
    return {"phone": phone, "variables": variables, "attempts": 0, "state": "pending", "next_at": 0.0,
            "call_id": None, "outcome": None, "record_id": None, "duration_seconds": None}


def new_head(platform: str, rules: Rules, total: int, now: float | None = None) -> Head:
    now = time.time() if now is None else now
    return {"id": "cmp_" + uuid.uuid4().hex[:20], "state": "running", "created_at": now, "platform": platform,
            "concurrency": rules.concurrency, "attempts": rules.attempts, "retry_gap": rules.retry_gap,
            "window": list(rules.window) if rules.window else None, "timezone": rules.timezone,
            "pace": rules.pace, "tokens": min(1.0, rules.pace), "tokens_at": now, "hold_until": 0.0,
            "voicemail": rules.voicemail, "total": total, "fresh": 0, "undialled_from": None,
            "counts": {"pending": total, "dialing": 0, "live": 0, "done": 0}, "outcomes": {}, "flight": {},
            "early": {}, "version": 0}


def new_campaign(platform: str, rules: Rules, contacts: list[tuple[str, dict[str, str]]],
                 now: float | None = None) -> Campaign:
    """A campaign in this process (the steps' tests, and what the book is given to keep)."""
    return Campaign(new_head(platform, rules, len(contacts), now),
                    ContactList([new_contact(phone, variables) for phone, variables in contacts]))


def from_document(document: dict[str, Any], now: float) -> tuple[Head, list[Contact], dict[int, float]]:
    """A campaign an earlier voicebot kept as one document (every contact inside it) as a head, its contacts and those
    waiting (every pending one, by when due and then in order): what the book keeps from then on."""
    contacts: list[Contact] = document["contacts"]
    head: Head = {k: v for k, v in document.items() if k not in ("contacts", "calls", "early")}
    counts = {"pending": 0, "dialing": 0, "live": 0, "done": 0}
    outcomes: dict[str, int] = {}
    flight: dict[str, dict[str, Any]] = {}
    waiting: dict[int, float] = {}
    for index, contact in enumerate(contacts):
        counts[contact["state"]] += 1
        if contact["state"] in ("dialing", "live"):
            flight[str(index)] = {"state": contact["state"], "claimed_at": contact.get("claimed_at", now),
                                  "call_id": contact.get("call_id"), "phone": contact["phone"]}
        elif contact["state"] == "pending":
            waiting[index] = float(contact.get("next_at", now)) + index * 1e-6
        elif contact.get("outcome"):
            outcomes[contact["outcome"]] = outcomes.get(contact["outcome"], 0) + 1
    head.update(total=len(contacts), fresh=len(contacts), undialled_from=None, counts=counts, outcomes=outcomes,
                flight=flight, version=0,
                early={call_id: {**early, "at": now} for call_id, early in document.get("early", {}).items()})
    return head, contacts, waiting


def in_window(campaign: Campaign, now: float) -> bool:
    window = campaign.get("window")
    if not window:
        return True
    local = datetime.fromtimestamp(now, ZoneInfo(campaign["timezone"])).time()
    start = clock_time.fromisoformat(window[0])
    end = clock_time(23, 59, 59, 999999) if window[1] == "24:00" else clock_time.fromisoformat(window[1])
    return start <= local < end


def claim(campaign: Campaign, now: float, most: int) -> list[tuple[int, Contact]]:
    """The contacts to dial now (each marked dialing, its attempt counted), at most ``most``: those due
    to be tried again first, then the next never dialled."""
    _sweep(campaign, now)
    if campaign["state"] != "running" or now < campaign.get("hold_until", 0.0) or not in_window(campaign, now):
        return []
    free = campaign["concurrency"] - len(campaign["flight"])
    # The pace: a bucket of at most one second's dials, refilled as time passes, shared by every instance.
    burst = max(1.0, campaign["pace"])
    tokens = min(burst, campaign["tokens"] + (now - campaign["tokens_at"]) * campaign["pace"])
    wanted = min(free, most, int(tokens))
    if wanted <= 0:
        return []  # the bucket is left as it was: it refills with time alone, so nothing needs writing
    indexes = campaign.due(now, wanted)
    while len(indexes) < wanted and campaign["fresh"] < campaign["total"]:
        indexes.append(campaign["fresh"])
        campaign["fresh"] += 1
    picked: list[tuple[int, Contact]] = []
    for index in indexes:
        contact = campaign.contact(index)
        campaign.unwait(index)
        contact.update(state="dialing", attempts=contact["attempts"] + 1, claimed_at=now, call_id=None)
        campaign["flight"][str(index)] = {"state": "dialing", "claimed_at": now, "call_id": None,
                                          "phone": contact["phone"]}
        _count(campaign, "pending", "dialing")
        picked.append((index, dict(contact)))
    if picked:
        campaign["tokens"], campaign["tokens_at"] = tokens - len(picked), now
    return picked


def placed(campaign: Campaign, index: int, call_id: str, now: float) -> None:
    """The platform took the call: the contact holds a place until the call's outcome comes (or came already:
    a number that is busy can end the call before its dial returns)."""
    flight = campaign["flight"].get(str(index))
    if flight is None or flight["state"] != "dialing":
        return  # swept as lost meanwhile
    flight.update(state="live", call_id=call_id)
    campaign.contact(index).update(state="live", call_id=call_id)
    _count(campaign, "dialing", "live")
    early = campaign["early"].pop(call_id, None)
    if early is not None:
        finished(campaign, call_id, early["outcome"], now, record_id=early.get("record_id"),
                 duration=early.get("duration"))


def not_placed(campaign: Campaign, index: int, now: float, *, hold: float = 0.0) -> None:
    """The platform refused or failed the dial. With ``hold`` (a 429: nothing was done) the attempt is given
    back and the whole campaign waits ``hold`` seconds; otherwise the attempt failed."""
    flight = campaign["flight"].get(str(index))
    if flight is None or flight["state"] != "dialing":
        return
    if hold > 0:
        del campaign["flight"][str(index)]
        contact = campaign.contact(index)
        contact.update(state="pending", attempts=contact["attempts"] - 1, next_at=now)
        campaign.wait(index, now)
        _count(campaign, "dialing", "pending")
        campaign["hold_until"] = max(campaign.get("hold_until", 0.0), now + hold)
        return
    _after_attempt(campaign, index, "failed", now)


def finished(campaign: Campaign, call_id: str, outcome: str, now: float, *, record_id: str | None = None,
             duration: float | None = None, phone: str | None = None) -> bool:
    """A campaign call ended with ``outcome``: tried again if the rules say so. False if it was known already.

    A call whose dial has not returned yet (a busy number can end first), or never will (the instance
    dialling it was killed after placing it), is its number's: the contact being dialled with that ``phone``.
    """
    flights = campaign["flight"]
    key = next((k for k, f in flights.items() if f["call_id"] == call_id), None)
    if key is None and phone:
        key = next((k for k, f in flights.items() if f["phone"] == phone and f["state"] == "dialing"), None)
        if key is not None:
            flights[key]["call_id"] = call_id
            campaign.contact(int(key))["call_id"] = call_id
    if key is None:
        if any(f["state"] == "dialing" and f["call_id"] is None for f in flights.values()):
            # Ended before its dial returned: kept until ``placed`` knows whose call it was.
            campaign["early"][call_id] = {"outcome": outcome, "record_id": record_id, "duration": duration,
                                          "at": now}
        return False  # or told before (a record made twice), or a later attempt is under way
    index = int(key)
    campaign.contact(index).update(record_id=record_id, duration_seconds=duration)
    _after_attempt(campaign, index, outcome, now)
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
        for index in campaign.due(float("inf"), campaign["total"]):  # once: those waiting to be tried again
            contact = campaign.contact(index)
            campaign.unwait(index)
            outcome = "not_dialled" if contact["attempts"] == 0 else contact.get("outcome") or "cancelled"
            contact.update(state="done", outcome=outcome)
            _count(campaign, "pending", "done", outcome)
        never = campaign["total"] - campaign["fresh"]  # the rest are never read: the cursor stops before them
        if never:
            campaign["undialled_from"], campaign["fresh"] = campaign["fresh"], campaign["total"]
            counts, outcomes = campaign["counts"], campaign["outcomes"]
            counts["pending"] -= never
            counts["done"] += never
            outcomes["not_dialled"] = outcomes.get("not_dialled", 0) + never
    _maybe_done(campaign)
    left: str = campaign["state"]
    return left


def dialling(campaign: Campaign, now: float) -> int:
    """Dials under way (claimed, not yet returned) that may still reach the platform."""
    return sum(1 for f in campaign["flight"].values()
               if f["state"] == "dialing" and now - f["claimed_at"] < DIAL_RETURNS)


def summary(campaign: Campaign) -> dict[str, Any]:
    """What ``voicebot campaign status`` shows: counts by state and by outcome."""
    counts = campaign["counts"]
    return {"campaign_id": campaign["id"], "state": campaign["state"], "platform": campaign["platform"],
            "contacts": campaign["total"], "done": counts["done"], "live": counts["live"] + counts["dialing"],
            "pending": counts["pending"], "outcomes": dict(campaign["outcomes"]),
            "concurrency": campaign["concurrency"],
            "window": "-".join(campaign["window"]) if campaign.get("window") else None,
            "timezone": campaign["timezone"]}


def results(campaign: Campaign) -> list[dict[str, Any]]:
    """One row per contact: its outcome (final, or the last attempt's while it is under way), attempts,
    duration, record id and variables."""
    undialled = campaign.get("undialled_from")
    rows = []
    for index, contact in campaign.every():
        never = undialled is not None and index >= undialled and contact["attempts"] == 0
        outcome = contact.get("outcome") or ("not_dialled" if contact["attempts"] == 0 else None)
        rows.append({"phone": contact["phone"], "outcome": outcome, "final": contact["state"] == "done" or never,
                     "attempts": contact["attempts"], "duration_seconds": contact.get("duration_seconds"),
                     "record_id": contact.get("record_id"), "call_id": contact.get("call_id"),
                     "variables": contact.get("variables") or {}})
    return rows


def _count(campaign: Campaign, was: str, now_is: str, outcome: str | None = None) -> None:
    counts = campaign["counts"]
    counts[was] -= 1
    counts[now_is] += 1
    if outcome is not None:
        campaign["outcomes"][outcome] = campaign["outcomes"].get(outcome, 0) + 1


def _after_attempt(campaign: Campaign, index: int, outcome: str, now: float) -> None:
    flight = campaign["flight"].pop(str(index))
    contact = campaign.contact(index)
    contact["outcome"] = outcome
    again = (outcome in RETRY and contact["attempts"] < campaign["attempts"]
             and campaign["state"] in ("running", "paused"))
    if again:
        contact.update(state="pending", next_at=now + campaign["retry_gap"])
        campaign.wait(index, contact["next_at"])
        _count(campaign, flight["state"], "pending")
    else:
        contact["state"] = "done"
        _count(campaign, flight["state"], "done", outcome)
    _maybe_done(campaign)


def _sweep(campaign: Campaign, now: float) -> None:
    """Contacts whose dial was lost with its instance, live calls whose end never came back, and early ends
    no dial claimed."""
    for key, flight in list(campaign["flight"].items()):
        if flight["state"] == "dialing" and now - flight["claimed_at"] > DIAL_STALE:
            _after_attempt(campaign, int(key), "failed", now)
        elif flight["state"] == "live" and now - flight["claimed_at"] > LIVE_LONGEST:
            _after_attempt(campaign, int(key), "failed", now)
    for call_id, early in list(campaign["early"].items()):
        if now - early.get("at", now) > DIAL_STALE:
            del campaign["early"][call_id]


def _maybe_done(campaign: Campaign) -> None:
    if campaign["state"] in ("running", "cancelled") and campaign["counts"]["done"] == campaign["total"]:
        campaign["state"] = "done"

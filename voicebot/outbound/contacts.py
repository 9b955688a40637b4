"""A campaign as its steps see it: the small head, and the contacts a step names, read when asked for.

The steps (``voicebot.outbound.campaign``) change a ``Campaign``; the book
(``voicebot.outbound.book``) gives them one over memory or Redis and keeps
what they changed, with the head, in one atomic write.
"""

from __future__ import annotations

from typing import Any, Iterator, Protocol

# A contact: phone, variables, attempts (begun), state (pending, dialing, live, done), next_at (epoch
# seconds: not dialled before), claimed_at, call_id, outcome (the last attempt's, or the final one once
# done), record_id, duration_seconds.
Contact = dict[str, Any]
# A campaign's head: id, state (running, paused, cancelled, done), created_at, platform, concurrency,
# attempts (most per contact), retry_gap (seconds), window (["09:00", "18:00"] in timezone, or None),
# timezone, pace (dials a second at most, across every instance), tokens and tokens_at (the pace's bucket),
# hold_until (a 429 asked to slow down: no dial before it), voicemail, total (contacts), fresh (the next
# contact never claimed), undialled_from (where cancel stopped the cursor), counts (contacts by state),
# outcomes (final outcomes by kind), flight (contact index -> {state, claimed_at, call_id, phone}, for
# the contacts dialing or live), early (call id -> outcome, for a call that ended before its dial
# returned), version (counts the changes).
Head = dict[str, Any]


class Contacts(Protocol):
    """Where a campaign's contacts are kept, as a step reads them (memory, or a Redis hash and sorted set)."""

    def contact(self, index: int) -> Contact:
        """Contact ``index``, a copy the caller may change."""

    def due(self, now: float, most: int) -> list[tuple[float, int]]:
        """Up to ``most`` contacts waiting to be tried again and due by ``now``: (when due, index), earliest
        first."""

    def every(self) -> Iterator[Contact]:
        """Every contact, in order (the results; the one read that grows with the campaign)."""


class Campaign:
    """A campaign as its steps see it: the head, and the contacts a step names, read when asked for.

    What a step changes is kept here (``changed``, ``waits``, ``unwaits``)
    until the book writes it with the head, in one atomic step; a view the
    book throws away (its write lost a race) changed nothing.
    """

    def __init__(self, head: Head, contacts: Contacts) -> None:
        self.head = head
        self.contacts = contacts
        self.changed: dict[int, Contact] = {}
        self.waits: dict[int, float] = {}  # index -> when due: to be tried again
        self.unwaits: set[int] = set()  # no longer waiting (claimed, or finished by cancel)

    def __getitem__(self, key: str) -> Any:
        return self.head[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.head[key] = value

    def get(self, key: str, default: Any = None) -> Any:
        return self.head.get(key, default)

    def contact(self, index: int) -> Contact:
        """Contact ``index``, to read or change: what is changed is written back with the head."""
        if index not in self.changed:
            self.changed[index] = self.contacts.contact(index)
        return self.changed[index]

    def wait(self, index: int, at: float) -> None:
        self.unwaits.discard(index)
        self.waits[index] = at

    def unwait(self, index: int) -> None:
        self.waits.pop(index, None)
        self.unwaits.add(index)

    def due(self, now: float, most: int) -> list[int]:
        """Contacts waiting to be tried again, due by ``now``, earliest first, as this step left them."""
        kept = [(at, i) for at, i in self.contacts.due(now, most + len(self.unwaits) + len(self.waits))
                if i not in self.unwaits and i not in self.waits]
        mine = [(at, i) for i, at in self.waits.items() if at <= now]
        return [i for _, i in sorted(kept + mine)[:most]]

    def every(self) -> Iterator[tuple[int, Contact]]:
        """Every contact with its index, as this step left them."""
        for index, contact in enumerate(self.contacts.every()):
            yield index, self.changed.get(index, contact)


class ContactList:
    """Contacts in this process: a list, and the ones waiting with when they are due."""

    def __init__(self, contacts: list[Contact], waiting: dict[int, float] | None = None) -> None:
        self.contacts = contacts
        self.waiting = waiting or {}

    def contact(self, index: int) -> Contact:
        return dict(self.contacts[index])

    def due(self, now: float, most: int) -> list[tuple[float, int]]:
        return sorted((at, i) for i, at in self.waiting.items() if at <= now)[:most]

    def every(self) -> Iterator[Contact]:
        return iter(self.contacts)

    def keep(self, campaign: Campaign) -> None:
        """What a step on ``campaign`` changed, kept (the memory book's write)."""
        for index, contact in campaign.changed.items():
            self.contacts[index] = contact
        for index in campaign.unwaits:
            self.waiting.pop(index, None)
        self.waiting.update(campaign.waits)

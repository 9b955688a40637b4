"""Where campaigns are kept: each a small head and its contacts, changed atomically, in memory or in Redis.

Every change is a read of the head, a step of ``voicebot.outbound.campaign``
(which reads the contacts it names) and a write of the head and those
contacts that lands only if nobody wrote the head in between (a
compare-and-set script in Redis, a lock in memory), tried again otherwise:
any worker of any instance can change a campaign, and none overwrites
another's change. Every change of a contact is a change of the head (its
counts, its contacts in flight, its version), so the head's compare-and-set
covers the contacts the step read.
"""

from __future__ import annotations

import copy
import json
import logging
import random
import threading
import time
from abc import ABC, abstractmethod
from typing import Any, Callable, Iterator, Mapping, TypeVar

from ..stores.settings import redis_failover_seconds
from ..exceptions import StoreError
from ..stores.redis import connect, patiently, redis_errors
from .campaign import from_document
from .contacts import Campaign, Contact, ContactList, Head

log = logging.getLogger(__name__)
T = TypeVar("T")

# Changes that lost a race this many times in a row give up (another worker keeps winning: try next tick).
MAX_TRIES = 20
ACTIVE = ("running", "paused", "cancelled")
# Contacts written to Redis in one command when a campaign starts, and read in one for its results.
CHUNK = 1000


class UnknownCampaign(KeyError):
    """No campaign has this id (or it is past its retention)."""


class CampaignBook(ABC):
    """Where campaigns are kept (memory or Redis), changed only by compare-and-set, so any worker of any
    instance can carry any campaign."""

    def __init__(self, retention: float) -> None:
        self.retention = retention  # how long a finished campaign is kept for its results

    @abstractmethod
    def create(self, campaign: Campaign) -> None:
        """Keep a new campaign (its head and every contact)."""

    @abstractmethod
    def get(self, campaign_id: str) -> Campaign:
        """The campaign as it is now (its head read; its contacts read when asked for); UnknownCampaign if
        there is none."""

    @abstractmethod
    def update(self, campaign_id: str, step: Callable[[Campaign], T]) -> T:
        """Apply ``step`` to the campaign and keep the result, atomically; what ``step`` returned.

        ``step`` may run more than once (when another worker changed the campaign first): it must change
        nothing but the campaign it is given, and say what it did only by what it returns.
        """

    @abstractmethod
    def active(self) -> list[str]:
        """The ids of campaigns not yet done (running, paused, or cancelled with calls still live)."""

    def close(self) -> None:
        pass


def _changed(campaign: Campaign, before: str) -> str | None:
    """The head to write (its version counted) if the step changed anything; None if it changed nothing."""
    if not (campaign.changed or campaign.waits or campaign.unwaits) \
            and json.dumps(campaign.head, separators=(",", ":")) == before:
        return None
    campaign["version"] = campaign.get("version", 0) + 1
    return json.dumps(campaign.head, separators=(",", ":"))


class MemoryBook(CampaignBook):
    """In this process: campaigns live as long as it does (a laptop's trial)."""

    def __init__(self, retention: float) -> None:
        super().__init__(retention)
        self._lock = threading.Lock()
        self._campaigns: dict[str, tuple[Head, ContactList]] = {}

    def create(self, campaign: Campaign) -> None:
        contacts = [dict(c) for _, c in campaign.every()]
        with self._lock:
            self._campaigns[campaign["id"]] = (copy.deepcopy(campaign.head), ContactList(contacts))

    def _held(self, campaign_id: str) -> tuple[Head, ContactList]:
        if campaign_id not in self._campaigns:
            raise UnknownCampaign(campaign_id)
        return self._campaigns[campaign_id]

    def get(self, campaign_id: str) -> Campaign:
        with self._lock:
            head, contacts = self._held(campaign_id)
            return Campaign(copy.deepcopy(head), ContactList([dict(c) for c in contacts.contacts],
                                                             dict(contacts.waiting)))

    def update(self, campaign_id: str, step: Callable[[Campaign], T]) -> T:
        with self._lock:
            head, contacts = self._held(campaign_id)
            working = Campaign(copy.deepcopy(head), contacts)
            result = step(working)
            contacts.keep(working)
            self._campaigns[campaign_id] = (working.head, contacts)
            return result

    def active(self) -> list[str]:
        with self._lock:
            return [i for i, (head, _) in self._campaigns.items() if head["state"] in ACTIVE]


# Write the new head and what the step changed only if the old head is still there: a compare-and-set.
# KEYS: head, contacts (a hash: index -> contact), waiting (a sorted set: index by when due).
# ARGV: the head read, the head to write, time to live in ms (0: none), how many contacts, how many waits,
# then the contacts (index, JSON), the waits (when due, index) and the indexes no longer waiting.
_SWAP = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
-- ARGV[first..last] to ``command`` a thousand items at a time: Lua's unpack takes no more than a few
-- thousand values (a cancel finishing 20,000 contacts that wait for a retry hands it 40,000).
local function each(command, key, first, last)
  for i = first, last, 2000 do redis.call(command, key, unpack(ARGV, i, math.min(i + 1999, last))) end
end
local n, w = tonumber(ARGV[4]), tonumber(ARGV[5])
local at = 6
each('HSET', KEYS[2], at, at + 2 * n - 1)
at = at + 2 * n
each('ZADD', KEYS[3], at, at + 2 * w - 1)
at = at + 2 * w
each('ZREM', KEYS[3], at, #ARGV)
if ARGV[3] ~= '0' then
  for _, key in ipairs(KEYS) do redis.call('PEXPIRE', key, ARGV[3]) end
end
return 1
"""


class RedisContacts:
    """A campaign's contacts in Redis, read one by one as a step names them."""

    def __init__(self, book: "RedisBook", campaign_id: str, total: int) -> None:
        self.book = book
        self.keys = book._keys(campaign_id)
        self.total = total  # as the head read with them says

    def contact(self, index: int) -> Contact:
        raw = self.book._do(lambda: self.book.client.hget(self.keys[1], str(index)))
        if raw is None:
            raise StoreError(f"campaign contact {index} is missing from {self.keys[1]}")
        contact: Contact = json.loads(raw)
        return contact

    def due(self, now: float, most: int) -> list[tuple[float, int]]:
        if most <= 0:
            return []
        found = self.book._do(lambda: self.book.client.zrangebyscore(self.keys[2], "-inf", now, start=0, num=most,
                                                                     withscores=True))
        return [(float(score), int(member)) for member, score in found]

    def every(self) -> Iterator[Contact]:
        for first in range(0, self.total, CHUNK):
            fields = [str(i) for i in range(first, min(self.total, first + CHUNK))]
            for raw in self.book._do(lambda: self.book.client.hmget(self.keys[1], fields)):
                yield json.loads(raw)


class RedisBook(CampaignBook):
    """``<prefix>:{campaign:<id>}`` holds each campaign's head, ``...:contacts`` its contacts (a hash) and
    ``...:waiting`` those waiting to be tried again (a sorted set); ``<prefix>:campaigns`` the ids not yet done.
    The braces keep a campaign's keys on one slot of a cluster, for the script that writes them together."""

    def __init__(self, client: Any, prefix: str, retention: float, failover_seconds: float = 0.0) -> None:
        super().__init__(retention)
        self.client: Any = client
        self.prefix = prefix
        self.failover_seconds = failover_seconds
        self.index = f"{prefix}:campaigns"
        self._swap = client.register_script(_SWAP)

    def _keys(self, campaign_id: str) -> list[str]:
        head = f"{self.prefix}:{{campaign:{campaign_id}}}"
        return [head, head + ":contacts", head + ":waiting"]

    def _do(self, operation: Callable[[], T]) -> T:
        with redis_errors():
            return patiently(operation, self.failover_seconds)

    def create(self, campaign: Campaign) -> None:
        head, contacts, _ = self._keys(campaign["id"])
        rows = [(str(i), json.dumps(c, separators=(",", ":"))) for i, c in campaign.every()]
        for first in range(0, len(rows), CHUNK):
            chunk = dict(rows[first:first + CHUNK])
            self._do(lambda: self.client.hset(contacts, mapping=chunk))
        # The head last: a campaign is there, for the runners, once every contact is.
        self._do(lambda: self.client.set(head, json.dumps(campaign.head, separators=(",", ":"))))
        self._do(lambda: self.client.sadd(self.index, campaign["id"]))

    def _head(self, campaign_id: str) -> tuple[str, Head]:
        keys = self._keys(campaign_id)
        raw = self._do(lambda: self.client.get(keys[0]))
        if raw is None:
            raise UnknownCampaign(campaign_id)
        text = raw.decode() if isinstance(raw, bytes) else raw
        head: Head = json.loads(text)
        if "contacts" in head:  # kept by an earlier voicebot as one document: split once, then as any other
            return self._split(campaign_id, keys, text, head)
        return text, head

    def _split(self, campaign_id: str, keys: list[str], text: str, document: dict[str, Any]) -> tuple[str, Head]:
        head, contacts, waiting = from_document(document, time.time())
        for first in range(0, len(contacts), CHUNK):
            chunk = {str(i): json.dumps(contacts[i], separators=(",", ":"))
                     for i in range(first, min(len(contacts), first + CHUNK))}
            self._do(lambda: self.client.hset(keys[1], mapping=chunk))
        data = json.dumps(head, separators=(",", ":"))
        # Only the waits go with the swap (the contacts are the same whoever splits it): one worker's lands.
        waits = [x for i, at in waiting.items() for x in (repr(at), str(i))]
        self._do(lambda: self._swap(keys=keys, args=[text, data, "0", 0, len(waiting), *waits]))
        log.info("campaign %s: split into a head and its %d contacts", document.get("id"), len(contacts))
        return self._head(campaign_id)

    def get(self, campaign_id: str) -> Campaign:
        head = self._head(campaign_id)[1]
        return Campaign(head, RedisContacts(self, campaign_id, head["total"]))

    def update(self, campaign_id: str, step: Callable[[Campaign], T]) -> T:
        keys = self._keys(campaign_id)
        for attempt in range(MAX_TRIES):
            if attempt:  # lost a race: a moment's jitter, so that the workers racing do not race again in step
                time.sleep(random.uniform(0, 0.002 * attempt))
            raw, head = self._head(campaign_id)
            working = Campaign(head, RedisContacts(self, campaign_id, head["total"]))
            result = step(working)
            data = _changed(working, raw)
            if data is None:
                return result  # nothing changed (a tick with nothing due): no write, and no race to lose
            done = working["state"] == "done"
            ttl = str(int(self.retention * 1000)) if done else "0"
            args = [raw, data, ttl, len(working.changed), len(working.waits),
                    *(x for i, c in working.changed.items() for x in (str(i), json.dumps(c, separators=(",", ":")))),
                    *(x for i, at in working.waits.items() for x in (repr(at), str(i))),
                    *(str(i) for i in working.unwaits)]
            if self._do(lambda: self._swap(keys=keys, args=args)):
                if done:
                    self._do(lambda: self.client.srem(self.index, campaign_id))
                return result
        raise StoreError(f"campaign {campaign_id}: changed by others {MAX_TRIES} times in a row; try again")

    def active(self) -> list[str]:
        members = self._do(lambda: self.client.smembers(self.index))
        return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)

    def close(self) -> None:
        self.client.close()


def build_book(config: Mapping[str, Any]) -> CampaignBook:
    retention = config["CALL_RECORD_RETENTION_SECONDS"]
    if not config["REDIS_URL"]:
        return MemoryBook(retention)
    client = connect(config["REDIS_URL"], timeout=config["REDIS_TIMEOUT_SECONDS"], max_connections=8,
                     tls_verify=config["REDIS_TLS_VERIFY"])
    return RedisBook(client, config["REDIS_PREFIX"], retention, failover_seconds=redis_failover_seconds(config))

"""Where campaigns are kept: one JSON document each, changed atomically, in memory or in Redis.

Every change is a read, a step of ``voicebot.outbound.campaign`` and a write
that lands only if nobody wrote in between (a compare-and-set script in
Redis, a lock in memory), tried again otherwise: any worker of any instance
can change a campaign, and none overwrites another's change.
"""

from __future__ import annotations

import copy
import json
import logging
import threading
from abc import ABC, abstractmethod
from typing import Any, Callable, Mapping, TypeVar

from ..stores.settings import redis_failover_seconds
from ..exceptions import StoreError
from ..stores.redis import connect, patiently, redis_errors
from .campaign import Campaign

log = logging.getLogger(__name__)
T = TypeVar("T")

# Changes that lost a race this many times in a row give up (another worker keeps winning: try next tick).
MAX_TRIES = 20
ACTIVE = ("running", "paused", "cancelled")


class UnknownCampaign(KeyError):
    """No campaign has this id (or it is past its retention)."""


class CampaignBook(ABC):
    """Where campaigns are kept (memory or Redis), changed only by compare-and-set, so any worker of any
    instance can carry any campaign."""

    def __init__(self, retention: float) -> None:
        self.retention = retention  # how long a finished campaign is kept for its results

    @abstractmethod
    def create(self, campaign: Campaign) -> None:
        """Keep a new campaign."""

    @abstractmethod
    def get(self, campaign_id: str) -> Campaign:
        """The campaign as it is now; UnknownCampaign if there is none."""

    @abstractmethod
    def update(self, campaign_id: str, step: Callable[[Campaign], T]) -> T:
        """Apply ``step`` to the campaign and keep the result, atomically; what ``step`` returned.

        ``step`` may run more than once (when another worker changed the campaign first): it must change
        nothing but the document it is given, and say what it did only by what it returns.
        """

    @abstractmethod
    def active(self) -> list[str]:
        """The ids of campaigns not yet done (running, paused, or cancelled with calls still live)."""

    def close(self) -> None:
        pass


class MemoryBook(CampaignBook):
    """In this process: campaigns live as long as it does (a laptop's trial)."""

    def __init__(self, retention: float) -> None:
        super().__init__(retention)
        self._lock = threading.Lock()
        self._campaigns: dict[str, Campaign] = {}

    def create(self, campaign: Campaign) -> None:
        with self._lock:
            self._campaigns[campaign["id"]] = copy.deepcopy(campaign)

    def get(self, campaign_id: str) -> Campaign:
        with self._lock:
            if campaign_id not in self._campaigns:
                raise UnknownCampaign(campaign_id)
            return copy.deepcopy(self._campaigns[campaign_id])

    def update(self, campaign_id: str, step: Callable[[Campaign], T]) -> T:
        with self._lock:
            if campaign_id not in self._campaigns:
                raise UnknownCampaign(campaign_id)
            working = copy.deepcopy(self._campaigns[campaign_id])
            result = step(working)
            self._campaigns[campaign_id] = working
            return result

    def active(self) -> list[str]:
        with self._lock:
            return [i for i, c in self._campaigns.items() if c["state"] in ACTIVE]


# Write the new document only if the old is still there: a compare-and-set. KEYS: the campaign; ARGV: the
# document read, the one to write, its time to live in ms (0: none).
_SWAP = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[3] == '0' then redis.call('SET', KEYS[1], ARGV[2]) else redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end
return 1
"""


class RedisBook(CampaignBook):
    """``<prefix>:{campaign:<id>}`` holds each campaign; ``<prefix>:campaigns`` the ids not yet done."""

    def __init__(self, client: Any, prefix: str, retention: float, failover_seconds: float = 0.0) -> None:
        super().__init__(retention)
        self.client: Any = client
        self.prefix = prefix
        self.failover_seconds = failover_seconds
        self.index = f"{prefix}:campaigns"
        self._swap = client.register_script(_SWAP)

    def _key(self, campaign_id: str) -> str:
        return f"{self.prefix}:{{campaign:{campaign_id}}}"

    def _do(self, operation: Callable[[], T]) -> T:
        with redis_errors():
            return patiently(operation, self.failover_seconds)

    def create(self, campaign: Campaign) -> None:
        data = json.dumps(campaign, separators=(",", ":"))
        self._do(lambda: self.client.set(self._key(campaign["id"]), data))
        self._do(lambda: self.client.sadd(self.index, campaign["id"]))

    def get(self, campaign_id: str) -> Campaign:
        raw = self._do(lambda: self.client.get(self._key(campaign_id)))
        if raw is None:
            raise UnknownCampaign(campaign_id)
        campaign: Campaign = json.loads(raw)
        return campaign

    def update(self, campaign_id: str, step: Callable[[Campaign], T]) -> T:
        key = self._key(campaign_id)
        for _ in range(MAX_TRIES):
            raw = self._do(lambda: self.client.get(key))
            if raw is None:
                raise UnknownCampaign(campaign_id)
            working: Campaign = json.loads(raw)
            result = step(working)
            done = working["state"] == "done"
            data = json.dumps(working, separators=(",", ":"))
            if data == (raw.decode() if isinstance(raw, bytes) else raw):
                return result  # nothing changed (a tick with nothing due): no write, and no race to lose
            ttl = str(int(self.retention * 1000)) if done else "0"
            if self._do(lambda: self._swap(keys=[key], args=[raw, data, ttl])):
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

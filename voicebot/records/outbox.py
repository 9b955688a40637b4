"""Where records wait: an archive kept for the retention time, and an outbox for delivery.

With a post-call analysis plan (ANALYSIS_FILE), a record first waits to be
analysed, and enters the archive and the outbox once it has been (at most once
per record id, however many workers finish it).

With Redis, all three are Redis Streams. The outbox is read by a consumer group, so
a record is handed to one worker at a time; it stays pending until that
worker acknowledges it, and a worker killed mid-delivery leaves it pending, to
be claimed by another after its back-off. Streams survive a Redis restart
with the append-only file on. With the memory store the same queue lives in
the process, with the same guarantees for as long as the process lives.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, TypeVar

import redis

from .. import compact_json, metrics
from ..stores.settings import redis_failover_seconds
from ..stores.redis import connect, patiently, redis_errors

log = logging.getLogger(__name__)
T = TypeVar("T")

GROUP = "delivery"
ANALYSIS_GROUP = "analysis"
FIRST_RETRY = 1.0  # seconds after a failed attempt; doubled each time...
LONGEST_RETRY = 60.0  # ...up to this: a receiver back from an outage gets its records within a minute


def backoff(attempts: int) -> float:
    return min(LONGEST_RETRY, FIRST_RETRY * 2.0 ** max(0, attempts - 1))


@dataclass
class Entry:
    """One record waiting for its delivery (or its analysis), with the attempts made so far."""

    entry_id: str
    record: dict[str, Any]
    attempts: int  # deliveries tried before this one
    added_at: float


class Outbox(ABC):
    """The archive of records and their delivery queue: at least once, one worker at a time per record."""

    def __init__(self, retention: float, deliver: bool, analyse: bool = False) -> None:
        self.retention = retention
        self.deliver = deliver  # False: archive only (no CALL_REPORT_URL)
        self.analyse = analyse  # True: a record is analysed before it is kept and queued (ANALYSIS_FILE)

    def add(self, record: dict[str, Any]) -> None:
        """Keep the record and queue it for delivery; first, with an analysis plan, queue it to be analysed."""
        if self.analyse:
            self._queue_for_analysis(record)
        else:
            self._keep(record)

    @abstractmethod
    def _keep(self, record: dict[str, Any]) -> None:
        """Into the archive, and the delivery queue."""

    @abstractmethod
    def _queue_for_analysis(self, record: dict[str, Any]) -> None:
        """Into the analysis queue."""

    @abstractmethod
    def due_for_analysis(self, consumer: str, limit: int, claim_after: float) -> list[Entry]:
        """Records to analyse: new ones, and those a worker took ``claim_after`` seconds ago and never finished."""

    @abstractmethod
    def analysed(self, entry: Entry, record: dict[str, Any]) -> None:
        """The analysed ``record`` is kept and queued (once per record id), and ``entry`` leaves the analysis queue."""

    @abstractmethod
    def export(self, since: float) -> Iterator[dict[str, Any]]:
        """The records made since ``since`` (epoch seconds), oldest first."""

    @abstractmethod
    def due(self, consumer: str, limit: int) -> list[Entry]:
        """Entries to deliver now: new ones, and failed ones whose back-off has passed."""

    @abstractmethod
    def release(self, entry: Entry) -> None:
        """A failed attempt: the entry waits for its back-off, then is due again."""

    @abstractmethod
    def done(self, entry: Entry) -> None:
        """Delivered, or given up on: out of the queue (still in the archive)."""

    @abstractmethod
    def oldest_undelivered(self) -> float | None:
        """Age in seconds of the oldest record still to deliver."""

    def close(self) -> None:
        pass


class MemoryOutbox(Outbox):
    """In this process: the archive keeps the last ``max_archive`` records (within the retention time),
    so a long-running single process stays bounded; the queue holds what is not delivered yet, at most
    ``max_queued`` records: past that, while the receiver stays down, the oldest is given up on (it stays
    in the archive while the archive keeps it), logged and counted in /metrics."""

    def __init__(self, retention: float, deliver: bool, max_archive: int = 1000, max_queued: int = 1000,
                 analyse: bool = False) -> None:
        super().__init__(retention, deliver, analyse)
        self.max_queued = max_queued
        self._lock = threading.Lock()
        self._archive: deque[tuple[float, dict[str, Any]]] = deque(maxlen=max_archive)
        self._queue: OrderedDict[str, Entry] = OrderedDict()
        self._next_try: dict[str, float] = {}
        self._taken: set[str] = set()
        self._counter = 0
        self._to_analyse: OrderedDict[str, Entry] = OrderedDict()
        self._analysing: dict[str, float] = {}  # entry id -> when a worker took it
        self._analysed_ids: OrderedDict[str, None] = OrderedDict()  # the last ones kept, so each is kept once

    def _queue_for_analysis(self, record: dict[str, Any]) -> None:
        now = time.time()
        with self._lock:
            self._counter += 1
            entry_id = f"{int(now * 1000)}-{self._counter}"
            self._to_analyse[entry_id] = Entry(entry_id, record, 0, now)

    def due_for_analysis(self, consumer: str, limit: int, claim_after: float) -> list[Entry]:
        now = time.time()
        with self._lock:
            ready = [e for i, e in self._to_analyse.items()
                     if i not in self._analysing or self._analysing[i] <= now - claim_after][:limit]
            for entry in ready:
                if entry.entry_id in self._analysing:
                    entry.attempts += 1
                self._analysing[entry.entry_id] = now
            return [Entry(e.entry_id, e.record, e.attempts, e.added_at) for e in ready]

    def analysed(self, entry: Entry, record: dict[str, Any]) -> None:
        with self._lock:
            self._to_analyse.pop(entry.entry_id, None)
            self._analysing.pop(entry.entry_id, None)
            record_id = str(record.get("id"))
            if record_id in self._analysed_ids:
                return
            self._analysed_ids[record_id] = None
            while len(self._analysed_ids) > 10 * (self._archive.maxlen or 1000):
                self._analysed_ids.popitem(last=False)
        self._keep(record)

    def _keep(self, record: dict[str, Any]) -> None:
        now = time.time()
        dropped: list[str] = []
        with self._lock:
            self._archive.append((now, record))
            while self._archive and self._archive[0][0] < now - self.retention:
                self._archive.popleft()
            if self.deliver:
                self._counter += 1
                entry_id = f"{int(now * 1000)}-{self._counter}"
                self._queue[entry_id] = Entry(entry_id, record, 0, now)
                self._next_try[entry_id] = now
                dropped = self._drop_oldest_past_bound()
        for record_id in dropped:
            log.error("call record %s given up undelivered: %d records already wait for CALL_REPORT_URL "
                      "(MAX_QUEUED_RECORDS); it stays in the archive while it keeps it: voicebot calls export",
                      record_id, self.max_queued)
            metrics.RECORDS.labels("dropped").inc()

    def _drop_oldest_past_bound(self) -> list[str]:
        dropped = []
        while len(self._queue) > self.max_queued:
            # The oldest not being sent right now; one being sent is finished by its sender.
            oldest = next((i for i in self._queue if i not in self._taken), None)
            if oldest is None:
                break
            entry = self._queue.pop(oldest)
            self._next_try.pop(oldest, None)
            dropped.append(entry.record.get("id", "?"))
        return dropped

    def export(self, since: float) -> Iterator[dict[str, Any]]:
        with self._lock:
            records = [r for t, r in self._archive if t >= since]
        return iter(records)

    def due(self, consumer: str, limit: int) -> list[Entry]:
        now = time.time()
        with self._lock:
            ready = [e for i, e in self._queue.items() if i not in self._taken and self._next_try[i] <= now]
            ready = ready[:limit]
            for entry in ready:
                self._taken.add(entry.entry_id)
                entry.attempts += 1
                self._next_try[entry.entry_id] = now + backoff(entry.attempts)
            return [Entry(e.entry_id, e.record, e.attempts - 1, e.added_at) for e in ready]

    def release(self, entry: Entry) -> None:
        """A failed attempt: the entry waits for its back-off."""
        with self._lock:
            self._taken.discard(entry.entry_id)

    def done(self, entry: Entry) -> None:
        with self._lock:
            self._queue.pop(entry.entry_id, None)
            self._next_try.pop(entry.entry_id, None)
            self._taken.discard(entry.entry_id)

    def oldest_undelivered(self) -> float | None:
        with self._lock:
            first = next(iter(self._queue.values()), None)
        return time.time() - first.added_at if first else None


class RedisOutbox(Outbox):
    """Two Redis Streams under one hash tag, ``<prefix>:{records}:outbox`` and ``...:archive``: one slot,
    so the transaction that adds a record to both works on a cluster too."""

    def __init__(self, client: Any, prefix: str, retention: float, deliver: bool,
                 failover_seconds: float = 0.0, analyse: bool = False) -> None:
        super().__init__(retention, deliver, analyse)
        # redis-py types replies as unions over decode_responses; this client returns bytes.
        self.client: Any = client
        self.failover_seconds = failover_seconds
        self.outbox = f"{prefix}:{{records}}:outbox"
        self.archive = f"{prefix}:{{records}}:archive"
        self.to_analyse = f"{prefix}:{{records}}:analysis"
        self._analysed_prefix = f"{prefix}:{{records}}:analysed:"  # one key per record id kept after analysis
        self._keep_once = client.register_script(_KEEP_ONCE)
        # Where versions before the hash tag kept them (one server only): moved once, on first use.
        self._untagged = (f"{prefix}:records:outbox", f"{prefix}:records:archive")
        self._moved = False
        self._group_ready = False
        self._analysis_group_ready = False

    def _do(self, operation: Callable[[], T]) -> T:
        with redis_errors():
            return patiently(operation, self.failover_seconds)

    def _ensure_group(self) -> None:
        if self._group_ready:
            return
        self._move_untagged()

        def create() -> None:
            try:
                self.client.xgroup_create(self.outbox, GROUP, id="0", mkstream=True)
            except redis.exceptions.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):  # made already, by this worker or another
                    raise

        self._do(create)
        self._group_ready = True

    def _ensure_analysis_group(self) -> None:
        if self._analysis_group_ready:
            return

        def create() -> None:
            try:
                self.client.xgroup_create(self.to_analyse, ANALYSIS_GROUP, id="0", mkstream=True)
            except redis.exceptions.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

        self._do(create)
        self._analysis_group_ready = True

    def _move_untagged(self) -> None:
        if self._moved or isinstance(self.client, redis.cluster.RedisCluster):
            return  # a cluster never had them: cross-slot keys never worked there

        def move(old: str, new: str) -> None:
            try:
                self.client.renamenx(old, new)
            except redis.exceptions.ResponseError as exc:
                if "no such key" not in str(exc):  # nothing kept there: the usual case
                    raise

        for old, new in zip(self._untagged, (self.outbox, self.archive)):
            self._do(lambda: move(old, new))
        self._moved = True

    def _queue_for_analysis(self, record: dict[str, Any]) -> None:
        data = compact_json.dumps(record)
        self._do(lambda: self.client.xadd(self.to_analyse, {"record": data}))

    def due_for_analysis(self, consumer: str, limit: int, claim_after: float) -> list[Entry]:
        self._ensure_analysis_group()
        return self._take(self.to_analyse, ANALYSIS_GROUP, consumer, limit, lambda attempts: int(claim_after * 1000))

    def analysed(self, entry: Entry, record: dict[str, Any]) -> None:
        data = compact_json.dumps(record)
        oldest_kept = int((time.time() - self.retention) * 1000)
        keys = [self.to_analyse, self.archive, self.outbox, self._analysed_prefix + str(record.get("id"))]
        args = [ANALYSIS_GROUP, entry.entry_id, data, oldest_kept, int(self.deliver), int(self.retention * 1000)]
        self._do(lambda: self._keep_once(keys=keys, args=args))

    def _keep(self, record: dict[str, Any]) -> None:
        data = compact_json.dumps(record)
        oldest_kept = int((time.time() - self.retention) * 1000)
        self._move_untagged()

        def both() -> None:
            pipe = self.client.pipeline(transaction=True)
            pipe.xadd(self.archive, {"record": data}, minid=oldest_kept, approximate=True)
            if self.deliver:
                pipe.xadd(self.outbox, {"record": data})
            pipe.execute()

        self._do(both)

    def export(self, since: float) -> Iterator[dict[str, Any]]:
        start = f"{int(since * 1000)}-0"
        self._move_untagged()
        while True:
            batch = self._do(lambda: self.client.xrange(self.archive, min=start, max="+", count=500))
            for entry_id, fields in batch:
                yield json.loads(fields[b"record"])
            if len(batch) < 500:
                return
            last = batch[-1][0].decode()
            start = "(" + last

    def due(self, consumer: str, limit: int) -> list[Entry]:
        self._ensure_group()
        return self._take(self.outbox, GROUP, consumer, limit, lambda attempts: int(backoff(attempts) * 1000))

    def _take(self, stream: str, group: str, consumer: str, limit: int, wait_ms: Callable[[int], int]) -> list[Entry]:
        """Entries of ``stream`` for ``consumer``: pending ones idle past ``wait_ms(attempts)``, then new ones."""
        entries: list[Entry] = []
        pending = self._do(lambda: self.client.xpending_range(stream, group, min="-", max="+", count=limit,
                                                              idle=wait_ms(1)))
        for item in pending:
            idle_ms = wait_ms(item["times_delivered"])
            if item["time_since_delivered"] < idle_ms:
                continue
            # Claimed only if still idle that long: two workers never take the same entry.
            claimed = self._do(lambda: self.client.xclaim(stream, group, consumer, idle_ms, [item["message_id"]]))
            entries += [self._entry(i, f, item["times_delivered"]) for i, f in claimed if f]
        if len(entries) < limit:
            fresh = self._do(lambda: self.client.xreadgroup(group, consumer, {stream: ">"},
                                                            count=limit - len(entries)))
            for _, items in fresh or []:
                entries += [self._entry(i, f, 0) for i, f in items if f]
        return entries

    def _entry(self, entry_id: bytes, fields: Mapping[bytes, bytes], attempts: int) -> Entry:
        text = entry_id.decode()
        return Entry(text, json.loads(fields[b"record"]), attempts, int(text.split("-")[0]) / 1000)

    def release(self, entry: Entry) -> None:
        """A failed attempt: the entry stays pending, to be claimed again after its back-off."""

    def done(self, entry: Entry) -> None:
        def both() -> None:
            pipe = self.client.pipeline(transaction=True)
            pipe.xack(self.outbox, GROUP, entry.entry_id)
            pipe.xdel(self.outbox, entry.entry_id)
            pipe.execute()

        self._do(both)

    def oldest_undelivered(self) -> float | None:
        first = self._do(lambda: self.client.xrange(self.outbox, min="-", max="+", count=1))
        if not first:
            return None
        return time.time() - int(first[0][0].decode().split("-")[0]) / 1000

    def close(self) -> None:
        self.client.close()


# The analysed record, kept once per record id: into the archive and (when delivering) the outbox, and its
# entry out of the analysis queue. One script, so a worker killed half-way leaves all of it or none.
# KEYS: analysis stream, archive, outbox, the record id's marker; ARGV: group, entry id, record, the archive's
# oldest id kept, deliver (0/1), the marker's time to live (ms). Every key shares the {records} hash tag.
_KEEP_ONCE = """
if redis.call('SET', KEYS[4], '1', 'NX', 'PX', ARGV[6]) then
  redis.call('XADD', KEYS[2], 'MINID', '~', ARGV[4], '*', 'record', ARGV[3])
  if ARGV[5] == '1' then redis.call('XADD', KEYS[3], '*', 'record', ARGV[3]) end
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
"""


def build_outbox(config: Mapping[str, Any]) -> Outbox:
    deliver = bool(config["CALL_REPORT_URL"])
    analyse = bool(config["ANALYSIS_FILE"])
    retention = config["CALL_RECORD_RETENTION_SECONDS"]
    if not config["REDIS_URL"]:
        return MemoryOutbox(retention, deliver, max_queued=config["MAX_QUEUED_RECORDS"], analyse=analyse)
    client = connect(config["REDIS_URL"], timeout=config["REDIS_TIMEOUT_SECONDS"], max_connections=8,
                     tls_verify=config["REDIS_TLS_VERIFY"])
    return RedisOutbox(client, config["REDIS_PREFIX"], retention, deliver,
                       failover_seconds=redis_failover_seconds(config), analyse=analyse)

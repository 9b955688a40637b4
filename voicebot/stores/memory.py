"""Sessions in this process's memory: for one worker (with threads), a laptop, the tests."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from typing import Any, Callable, Mapping, Sequence

from ..exceptions import CallBusy, StoreFull
from .base import DEFAULT_MAX_LINES, MAX_EVENTS_PER_CALL, CallRecord, OnExpired, SessionStore

log = logging.getLogger(__name__)
# Expired calls waiting for the reaper; past this, the oldest are forgotten (and said so).
MAX_UNREAPED = 10_000


class _CallLock:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0


class _Entry:
    __slots__ = ("expires", "value", "events", "lines")

    def __init__(self, expires: float, value: str) -> None:
        self.expires = expires
        self.value = value
        self.events: OrderedDict[str, None] = OrderedDict()  # digests, oldest first
        self.lines: list[dict[str, Any]] = []  # the transcript's last max_lines lines


class _ExpiringMap:
    """A dict whose entries all live ``ttl`` seconds from their last write.

    With one TTL for every entry, write order is expiry order: kept in an
    OrderedDict in write order, the expired entries are always at the front,
    and each write drops them in time proportional to how many expired.
    Not thread-safe by itself: the store's mutex guards it.
    """

    def __init__(self, ttl: float, on_drop: Callable[[str, _Entry], None] | None = None) -> None:
        self.ttl = ttl
        self.on_drop = on_drop
        self.entries: OrderedDict[str, _Entry] = OrderedDict()

    def get(self, key: str, now: float) -> _Entry | None:
        self.drop_expired(now)
        return self.entries.get(key)

    def put(self, key: str, value: str, now: float) -> _Entry:
        entry = self.entries.get(key)
        if entry is None:
            entry = self.entries[key] = _Entry(now + self.ttl, value)
        else:
            entry.expires, entry.value = now + self.ttl, value
        self.entries.move_to_end(key)
        self.drop_expired(now)
        return entry

    def touch(self, key: str, now: float) -> bool:
        entry = self.get(key, now)
        if entry is None:
            return False
        entry.expires = now + self.ttl
        self.entries.move_to_end(key)
        return True

    def pop(self, key: str) -> None:
        self.entries.pop(key, None)

    def drop_expired(self, now: float) -> None:
        entries = self.entries
        while entries:
            key, entry = next(iter(entries.items()))
            if entry.expires > now:
                break
            del entries[key]
            if self.on_drop is not None:
                self.on_drop(key, entry)


def _remember(entry: _Entry, digest: str) -> None:
    entry.events[digest] = None
    if len(entry.events) > MAX_EVENTS_PER_CALL:
        entry.events.popitem(last=False)


class MemoryStore(SessionStore):
    """Thread-safe; every call has its own lock, and one mutex guards the maps.

    Sessions are kept as JSON text, so a caller can never mutate a stored
    session by accident and both backends round-trip data the same way.
    Expired calls are dropped as later writes come in, which keeps memory
    bounded over a long campaign without a sweeper thread; ``max_calls``
    bounds it against a flood of new call ids inside one TTL.
    """

    def __init__(self, ttl_seconds: float, lease_seconds: float = 0.0, *, max_calls: int = 0,
                 clock: Callable[[], float] = time.monotonic, max_lines: int = DEFAULT_MAX_LINES) -> None:
        super().__init__(ttl_seconds, lease_seconds, max_lines)
        self.max_calls = max_calls
        self._clock = clock
        self._mutex = threading.Lock()
        self._unreaped: OrderedDict[str, _Entry] = OrderedDict()
        self._sessions = _ExpiringMap(ttl_seconds, on_drop=self._keep_for_reaper)
        self._aliases = _ExpiringMap(ttl_seconds)
        self._kept_longer: dict[float, _ExpiringMap] = {}  # aliases remembered for another time than the TTL
        self._locks: dict[str, _CallLock] = {}

    def active_calls(self) -> int:
        with self._mutex:
            self._sessions.drop_expired(self._clock())
            return len(self._sessions.entries)

    def _acquire(self, call_id: str, wait: float, digest: str | None) -> CallRecord:
        with self._mutex:
            call_lock = self._locks.get(call_id)
            if call_lock is None:
                call_lock = self._locks[call_id] = _CallLock()
            call_lock.users += 1
        if not call_lock.lock.acquire(timeout=wait):
            self._forget_lock(call_id, call_lock)
            raise CallBusy(f"call {call_id} stayed busy for {wait:.1f}s")
        with self._mutex:
            # An expired call not yet reaped is still whole: an event for it goes on with it.
            entry = self._sessions.get(call_id, self._clock()) or self._unreaped.get(call_id)
            text = entry.value if entry else None
            seen = bool(entry and digest and digest in entry.events)
        return CallRecord(self, call_id, json.loads(text) if text is not None else None, call_lock, seen)

    def _keep_for_reaper(self, call_id: str, entry: _Entry) -> None:
        self._unreaped[call_id] = entry
        if len(self._unreaped) > MAX_UNREAPED:
            forgotten, _ = self._unreaped.popitem(last=False)
            log.error("call %s expired and was forgotten before its record was made: the reaper is behind",
                      forgotten)

    def _write(self, record: CallRecord, data: Mapping[str, Any], release: bool, digest: str | None,
               lines: Sequence[Mapping[str, Any]]) -> None:
        text = json.dumps(data, separators=(",", ":"))
        try:
            with self._mutex:
                now = self._clock()
                is_new = self._sessions.get(record.call_id, now) is None
                if is_new and self.max_calls and len(self._sessions.entries) >= self.max_calls:
                    raise StoreFull(f"this process already holds {self.max_calls} live calls (MAX_LIVE_CALLS)")
                revived = self._unreaped.pop(record.call_id, None) if is_new else None
                entry = self._sessions.put(record.call_id, text, now)
                if revived is not None:  # an event came before the reaper: the call goes on, whole
                    entry.events, entry.lines = revived.events, revived.lines
                if digest:
                    _remember(entry, digest)
                entry.lines.extend(dict(each) for each in lines)
                del entry.lines[:-self.max_lines]
        except StoreFull:
            if release:
                self._release(record)
                record.released = True
            raise
        if release:
            self._release(record)

    def _renew(self, record: CallRecord) -> None:
        # A thread cannot die on its own and leave the lock held: no lease.
        return None

    def _delete(self, record: CallRecord) -> None:
        with self._mutex:
            self._sessions.pop(record.call_id)
            self._unreaped.pop(record.call_id, None)  # ended before the reaper came: one record, not two
        self._release(record)

    def _release(self, record: CallRecord) -> None:
        record.token.lock.release()
        self._forget_lock(record.call_id, record.token)

    def _forget_lock(self, call_id: str, call_lock: _CallLock) -> None:
        with self._mutex:
            call_lock.users -= 1
            if call_lock.users == 0:
                del self._locks[call_id]

    def _mark(self, call_id: str, digest: str) -> bool:
        with self._mutex:
            entry = self._sessions.get(call_id, self._clock())
            if entry is None:
                return True  # nothing to remember it in: the call is not (or no longer) known
            if digest in entry.events:
                return False
            _remember(entry, digest)
            return True

    def peek(self, call_id: str) -> dict[str, Any] | None:
        with self._mutex:
            entry = self._sessions.get(call_id, self._clock())
            text = entry.value if entry else None
        return json.loads(text) if text is not None else None

    def lines(self, call_id: str) -> list[dict[str, Any]]:
        with self._mutex:
            entry = self._sessions.get(call_id, self._clock()) or self._unreaped.get(call_id)
            return list(entry.lines) if entry else []

    def reap(self, on_expired: OnExpired, limit: int = 100) -> int:
        reaped = 0
        while reaped < limit:
            with self._mutex:
                self._sessions.drop_expired(self._clock())
                if not self._unreaped:
                    break
                call_id, entry = self._unreaped.popitem(last=False)
            on_expired(call_id, json.loads(entry.value), list(entry.lines))
            reaped += 1
        return reaped

    def touch(self, call_id: str) -> bool:
        with self._mutex:
            return self._sessions.touch(call_id, self._clock())

    def remember(self, name: str, value: str, *, seconds: float | None = None) -> None:
        with self._mutex:
            if seconds is None or seconds == self._aliases.ttl:
                self._aliases.put(name, value, self._clock())
                return
            # One map per lifetime keeps each in expiry order; there are one or two lifetimes in use.
            kept = self._kept_longer.get(seconds)
            if kept is None:
                kept = self._kept_longer[seconds] = _ExpiringMap(seconds)
            kept.put(name, value, self._clock())

    def recall(self, name: str, *, refresh: bool = False) -> str | None:
        with self._mutex:
            now = self._clock()
            if refresh:
                self._aliases.touch(name, now)
            entry = self._aliases.get(name, now)
            for kept in self._kept_longer.values():
                entry = entry or kept.get(name, now)
            return entry.value if entry else None

    def ping(self) -> None:
        return None

"""Sessions in this process's memory: for one worker (with threads), a laptop, the tests."""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from typing import Callable

from ..exceptions import CallBusy
from .base import CallRecord, SessionStore


class _CallLock:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0


class _ExpiringMap:
    """A dict whose entries all live ``ttl`` seconds from their last write.

    With one TTL for every entry, write order is expiry order: kept in an
    OrderedDict in write order, the expired entries are always at the front,
    and each write drops them in time proportional to how many expired.
    Not thread-safe by itself: the store's mutex guards it.
    """

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self.entries: OrderedDict[str, tuple[float, str]] = OrderedDict()

    def get(self, key: str, now: float) -> str | None:
        self.drop_expired(now)
        entry = self.entries.get(key)
        return entry[1] if entry else None

    def put(self, key: str, value: str, now: float) -> None:
        self.entries[key] = (now + self.ttl, value)
        self.entries.move_to_end(key)
        self.drop_expired(now)

    def pop(self, key: str) -> None:
        self.entries.pop(key, None)

    def drop_expired(self, now: float) -> None:
        entries = self.entries
        while entries:
            key, (expires, _) = next(iter(entries.items()))
            if expires > now:
                break
            del entries[key]


class MemoryStore(SessionStore):
    """Thread-safe; every call has its own lock, and one mutex guards the maps.

    Sessions are kept as JSON text, so a caller can never mutate a stored
    session by accident and both backends round-trip data the same way.
    Expired calls are dropped as later writes come in, which keeps memory
    bounded over a long campaign without a sweeper thread.
    """

    def __init__(self, ttl_seconds: float, lease_seconds: float = 0.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(ttl_seconds, lease_seconds)
        self._clock = clock
        self._mutex = threading.Lock()
        self._sessions = _ExpiringMap(ttl_seconds)
        self._aliases = _ExpiringMap(ttl_seconds)
        self._locks: dict[str, _CallLock] = {}

    def active_calls(self) -> int:
        with self._mutex:
            self._sessions.drop_expired(self._clock())
            return len(self._sessions.entries)

    def _acquire(self, call_id: str, wait: float) -> CallRecord:
        with self._mutex:
            call_lock = self._locks.get(call_id)
            if call_lock is None:
                call_lock = self._locks[call_id] = _CallLock()
            call_lock.users += 1
        if not call_lock.lock.acquire(timeout=wait):
            self._forget_lock(call_id, call_lock)
            raise CallBusy(f"call {call_id} stayed busy for {wait:.1f}s")
        return CallRecord(self, call_id, self.peek(call_id), call_lock)

    def _write(self, record: CallRecord, data: dict, release: bool) -> None:
        text = json.dumps(data, separators=(",", ":"))
        with self._mutex:
            self._sessions.put(record.call_id, text, self._clock())
        if release:
            self._release(record)

    def _renew(self, record: CallRecord) -> None:
        # A thread cannot die on its own and leave the lock held: no lease.
        return None

    def _delete(self, record: CallRecord) -> None:
        with self._mutex:
            self._sessions.pop(record.call_id)
        self._release(record)

    def _release(self, record: CallRecord) -> None:
        record.token.lock.release()
        self._forget_lock(record.call_id, record.token)

    def _forget_lock(self, call_id: str, call_lock: _CallLock) -> None:
        with self._mutex:
            call_lock.users -= 1
            if call_lock.users == 0:
                del self._locks[call_id]

    def peek(self, call_id: str) -> dict | None:
        with self._mutex:
            text = self._sessions.get(call_id, self._clock())
        return json.loads(text) if text is not None else None

    def set_alias(self, name: str, value: str) -> None:
        with self._mutex:
            self._aliases.put(name, value, self._clock())

    def get_alias(self, name: str) -> str | None:
        with self._mutex:
            return self._aliases.get(name, self._clock())

    def ping(self) -> None:
        return None

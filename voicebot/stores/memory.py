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


class MemoryStore(SessionStore):
    """Thread-safe; every call has its own lock, and one mutex guards the maps.

    Sessions are kept as JSON text, so a caller can never mutate a stored
    session by accident and both backends round-trip data the same way.
    Because every session has the same sliding TTL, the order of last writes
    is the order of expiry: an OrderedDict kept in write order lets each write
    drop the expired calls from its front in time proportional to how many
    expired, which keeps memory bounded over a long campaign without a
    sweeper thread.
    """

    def __init__(self, ttl_seconds: float, lease_seconds: float = 0.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(ttl_seconds, lease_seconds)
        self._clock = clock
        self._mutex = threading.Lock()
        self._sessions: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._locks: dict[str, _CallLock] = {}

    def __len__(self) -> int:
        with self._mutex:
            self._drop_expired(self._clock())
            return len(self._sessions)

    def _acquire(self, call_id: str, wait: float) -> CallRecord:
        with self._mutex:
            call_lock = self._locks.get(call_id)
            if call_lock is None:
                call_lock = self._locks[call_id] = _CallLock()
            call_lock.users += 1
        if not call_lock.lock.acquire(timeout=wait):
            self._forget_lock(call_id, call_lock)
            raise CallBusy(f"call {call_id} stayed busy for {wait:.1f}s")
        with self._mutex:
            now = self._clock()
            self._drop_expired(now)
            entry = self._sessions.get(call_id)
        data = json.loads(entry[1]) if entry else None
        return CallRecord(self, call_id, data, call_lock)

    def _write(self, record: CallRecord, data: dict, release: bool) -> None:
        text = json.dumps(data, separators=(",", ":"))
        with self._mutex:
            now = self._clock()
            self._sessions[record.call_id] = (now + self.ttl_seconds, text)
            self._sessions.move_to_end(record.call_id)
            self._drop_expired(now)
        if release:
            self._release(record)

    def _delete(self, record: CallRecord) -> None:
        with self._mutex:
            self._sessions.pop(record.call_id, None)
        self._release(record)

    def _release(self, record: CallRecord) -> None:
        record.token.lock.release()
        self._forget_lock(record.call_id, record.token)

    def _forget_lock(self, call_id: str, call_lock: _CallLock) -> None:
        with self._mutex:
            call_lock.users -= 1
            if call_lock.users == 0:
                del self._locks[call_id]

    def _drop_expired(self, now: float) -> None:
        sessions = self._sessions
        while sessions:
            call_id, (expires, _) = next(iter(sessions.items()))
            if expires > now:
                break
            del sessions[call_id]

    def ping(self) -> None:
        return None

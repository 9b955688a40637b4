"""The session store interface: one record per call, read and written under the call's lock."""

from __future__ import annotations

import hashlib
import logging
import time
from abc import ABC, abstractmethod
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping, Sequence

from ..exceptions import StoreError

log = logging.getLogger(__name__)

# Event ids a call remembers, as fixed-size digests: a call's whole life for
# any real call (a transcript every few seconds for hours), bounded in bytes
# for one that is not.
MAX_EVENTS_PER_CALL = 10_000
# Transcript lines a call keeps for its record, unless told otherwise (MAX_TRANSCRIPT_LINES).
DEFAULT_MAX_LINES = 200

# A call idle for the session TTL has expired, but its data is kept this much
# longer, so that the reaper can turn it into an end-of-call record first.
REAP_GRACE_SECONDS = 3600.0

# A lease taken or renewed this recently needs no renewing before the next
# step: it is at most this much shorter than a fresh one, a margin the
# settings check leaves (the lease outlives the model's deadline by 0.5 s or
# more), and the round trip saved is a tenth of a turn's store work. A store
# whose lease is longer keeps the same bound for longer (``fresh_lease_seconds``).
FRESH_LEASE_SECONDS = 0.1

# The reaper's handler: (call id, session, transcript lines) of an expired call.
OnExpired = Callable[[str, dict[str, Any], list[Any]], None]


def event_digest(event_id: str) -> str:
    """16 hex characters, whatever the id's length."""
    return hashlib.blake2b(event_id.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


class CallRecord:
    """A call's session as read under its lock; ``data`` is None for a call not (or no longer) known.

    ``seen`` is True when the event asked about in ``locked`` was handled before.
    """

    __slots__ = ("store", "call_id", "data", "token", "lock_wait", "released", "seen", "leased_at", "server_clock")

    def __init__(self, store: "SessionStore", call_id: str, data: dict[str, Any] | None, token: Any,
                 seen: bool = False) -> None:
        self.store = store
        self.call_id = call_id
        self.data = data
        self.token = token
        self.lock_wait = 0.0
        self.released = False
        self.seen = seen
        # When the lease last started, no later than the store set it (monotonic).
        self.leased_at = float("-inf")
        # The store's own clock (ms) as the lock's taking read it, and the local monotonic time that answer
        # came: a store that fences writes by its clock (Redis) reckons from it; None for one that does not.
        self.server_clock: tuple[int, float] | None = None

    def save(self, data: Mapping[str, Any], *, release: bool = False, event_id: str | None = None,
             lines: Sequence[Mapping[str, Any]] | None = None) -> None:
        """Write ``data`` back with a fresh TTL, ``event_id`` as handled, ``lines`` added to the transcript.

        ``release`` also gives up the lock in the same step; without it the
        lease starts afresh (a checkpoint in a long piece of work). The
        transcript is kept beside the session, not in it: a long call's
        transcript is not rewritten on every turn. Only its last
        ``max_lines`` lines are kept; ``data["transcript_lines"]`` counts
        every line ever added, so the record can say how many went.
        """
        if lines and isinstance(data, dict):  # a session is a dict; counted in place, as the caller holds it
            data["transcript_lines"] = data.get("transcript_lines", 0) + len(lines)
        sent = time.monotonic()
        self.store._write(self, data, release, None if event_id is None else event_digest(event_id), lines or [])
        self.leased_at = sent
        self.data = dict(data) if not isinstance(data, dict) else data
        if release:
            self.released = True

    def renew(self) -> None:
        """Start the lease afresh, before a step that may take a while (raises LockLost if it ran out)."""
        sent = time.monotonic()
        if sent - self.leased_at < self.store.fresh_lease_seconds:
            return
        self.store._renew(self)
        self.leased_at = sent

    def delete(self) -> None:
        """Forget the call and give up its lock."""
        self.store._delete(self)
        self.data = None
        self.released = True


class SessionStore(ABC):
    """Per-call JSON-able sessions with a per-call lock and a sliding TTL.

    The lock serializes the turns of one call; calls never wait for each other.
    """

    def __init__(self, ttl_seconds: float, lease_seconds: float, max_lines: int = DEFAULT_MAX_LINES) -> None:
        self.ttl_seconds = ttl_seconds
        self.lease_seconds = lease_seconds
        self.max_lines = max_lines  # of a call's transcript: past it, the oldest lines go
        # How long a lease needs no renewing before a step (see FRESH_LEASE_SECONDS).
        self.fresh_lease_seconds = FRESH_LEASE_SECONDS

    @contextmanager
    def locked(self, call_id: str, wait: float, event_id: str | None = None) -> Iterator[CallRecord]:
        """Hold ``call_id``'s lock (waiting up to ``wait`` seconds) and read its session.

        With ``event_id``, ``record.seen`` tells whether that event was handled
        before. Raises CallBusy when the lock stays taken, StoreUnavailable
        when the store cannot be reached.
        """
        started = time.monotonic()
        record = self._acquire(call_id, wait, None if event_id is None else event_digest(event_id))
        record.lock_wait = time.monotonic() - started
        record.leased_at = started
        try:
            yield record
        finally:
            if not record.released:
                record.released = True
                try:
                    self._release(record)
                except StoreError:
                    # The lease frees the call soon anyway; the error that
                    # matters (if any) is the one already on its way out.
                    log.warning("could not release the lock of call %s", call_id)

    def mark_event(self, call_id: str, event_id: str) -> bool:
        """Record ``event_id`` as handled without the call's lock; False if it already was."""
        return self._mark(call_id, event_digest(event_id))

    @abstractmethod
    def _acquire(self, call_id: str, wait: float, digest: str | None) -> CallRecord: ...

    @abstractmethod
    def _write(self, record: CallRecord, data: Mapping[str, Any], release: bool, digest: str | None,
               lines: Sequence[Mapping[str, Any]]) -> None: ...

    @abstractmethod
    def _renew(self, record: CallRecord) -> None: ...

    @abstractmethod
    def _delete(self, record: CallRecord) -> None: ...

    @abstractmethod
    def _release(self, record: CallRecord) -> None: ...

    @abstractmethod
    def _mark(self, call_id: str, digest: str) -> bool: ...

    @abstractmethod
    def peek(self, call_id: str) -> dict[str, Any] | None:
        """The call's session as stored now, without taking its lock (may be a turn behind)."""

    @abstractmethod
    def lines(self, call_id: str) -> list[dict[str, Any]]:
        """The call's whole transcript, in order."""

    @abstractmethod
    def reap(self, on_expired: OnExpired, limit: int = 100) -> int:
        """Hand each call idle for the session TTL to ``on_expired``, then forget it; how many."""

    @abstractmethod
    def touch(self, call_id: str) -> bool:
        """Restart the call's TTL without a write (a long call with long silences); False if unknown."""

    @abstractmethod
    def remember(self, name: str, value: str, *, seconds: float | None = None) -> None:
        """Remember a short string under ``name`` for ``seconds``, or the session TTL (e.g. transcribe id ->
        call id)."""

    @abstractmethod
    def recall(self, name: str, *, refresh: bool = False) -> str | None:
        """The string under ``name``; ``refresh`` restarts its TTL too (it is still in use)."""

    @abstractmethod
    def active_calls(self) -> int:
        """Calls with a session that has neither ended nor expired."""

    @abstractmethod
    def ping(self) -> None:
        """Raise StoreUnavailable unless the store answers."""

    def close(self) -> None:
        """Let go of connections; the store is not used afterwards."""

"""Sessions in Redis: any worker of any instance can serve any event of any call.

Keys are ``<prefix>:call:{<call id>}:session``, ``...:lock``, ``...:events``
(digests of the event ids handled, for dropping redeliveries) and ``...:lines``
(the transcript's last lines, one JSON line per entry, appended as it grows). The braces
are a Redis Cluster hash tag: a call's keys land on the same slot, so
the Lua scripts below, which touch them together, work on a cluster too. A sorted set
``<prefix>:active`` (call id -> last activity) answers "how many calls are
live"; it is written in the same round trip as the session, by pipeline
rather than inside the script, because on a cluster it lives on another slot
(there, where no script runs in a pipeline, it is a second round trip);
each call's first write also prunes the calls that expired, in that round trip.
Every step is tried again with back-off through a failover (``patiently``).

The lock follows redis-py's ``redis/lock.py``: a random token set with NX and
a lease (PX), released only by its holder (token checked in Lua). A worker
killed mid-turn leaves a lock that expires by itself after the lease. Writes
are token-checked too: a turn whose lease ran out cannot overwrite the history
of the turn that took the lock after it. Taking the lock and reading the
session is one round trip; writing it back and releasing is another.

A Redis that stalls (a paused VM, a slow disk, a busy network) runs what was
sent to it when it wakes, long after the client stopped waiting, answered
the platform with an error and had the event sent again. So taking the lock
and writing are fenced by Redis's own clock too: each carries the moment, on
that clock, when its sender gives up on it (its socket timeout, or the
webhook's budget if sooner), learned from the clock reading the last lock
taken returned, and refuses itself past it. A turn answered with an error is
then never in the history, and its redelivery is not taken as new words.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping, Sequence, TypeVar

import redis
from redis.commands.core import Script

from .. import compact_json
from ..deadline import remaining_in_effect
from ..exceptions import CallBusy, LockLost, StoreError, StoreUnavailable
from .base import DEFAULT_MAX_LINES, MAX_EVENTS_PER_CALL, REAP_GRACE_SECONDS, CallRecord, OnExpired, SessionStore
from .redis_url import connect, patiently

__all__ = ["RedisStore", "connect", "redis_errors", "patiently"]

T = TypeVar("T")
log = logging.getLogger(__name__)

# Redis's own clock in ms, for the fence below (TIME: seconds and microseconds).
_NOW_MS = ("local clock = redis.call('time')\n"
           "local now_ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)\n")

# KEYS: lock, session, events. ARGV: token, lease ms, event digest or '', fence (Redis ms, 0 for none).
# Returns {1, session or false, seen, now ms} when the lock was taken (or is already this token's),
# {0, lock pttl, now ms} when not, {-1, now ms} when it ran past its fence.
_ACQUIRE = _NOW_MS + """
if tonumber(ARGV[4]) > 0 and now_ms > tonumber(ARGV[4]) then return {-1, now_ms} end
local mine = redis.call('get', KEYS[1]) == ARGV[1]  -- sent again after a reply lost in a failover
if mine or redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local seen = 0
  if ARGV[3] ~= '' and redis.call('zscore', KEYS[3], ARGV[3]) then seen = 1 end
  return {1, redis.call('get', KEYS[2]), seen, now_ms}
end
return {0, redis.call('pttl', KEYS[1]), now_ms}
"""

# KEYS: lock, session, events, lines. ARGV: token, session json, ttl ms, release (1/0),
# lease ms, event digest or '', now ms, most events kept, most lines kept, fence (Redis ms, 0 for none),
# then transcript lines to add. Returns 1 written, 0 lease lost, -1 past its fence: nothing written, and the
# lock let go (the turn is over; its own release, on a fresh connection, may never have reached Redis).
_WRITE = _NOW_MS + """
if tonumber(ARGV[10]) > 0 and now_ms > tonumber(ARGV[10]) then
  if redis.call('get', KEYS[1]) == ARGV[1] then redis.call('del', KEYS[1]) end
  return -1
end
if redis.call('get', KEYS[1]) ~= ARGV[1] then
  -- Sent again after its reply was lost: the first one wrote and released.
  if ARGV[4] == '1' and redis.call('get', KEYS[2]) == ARGV[2] then return 1 end
  return 0
end
redis.call('set', KEYS[2], ARGV[2], 'PX', ARGV[3])
if ARGV[6] ~= '' then
  redis.call('zadd', KEYS[3], ARGV[7], ARGV[6])
  redis.call('zremrangebyrank', KEYS[3], 0, -(tonumber(ARGV[8]) + 1))
end
redis.call('pexpire', KEYS[3], ARGV[3])
if #ARGV >= 11 then
  redis.call('rpush', KEYS[4], unpack(ARGV, 11))
  redis.call('ltrim', KEYS[4], -tonumber(ARGV[9]), -1)
end
redis.call('pexpire', KEYS[4], ARGV[3])
if ARGV[4] == '1' then redis.call('del', KEYS[1]) else redis.call('pexpire', KEYS[1], ARGV[5]) end
return 1
"""

# KEYS: lock, session, events, lines. ARGV: token.
_DELETE = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('del', KEYS[2], KEYS[1], KEYS[3], KEYS[4])
"""

# KEYS: lock. ARGV: token, lease ms.
_RENEW = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('pexpire', KEYS[1], ARGV[2])
"""

# KEYS: lock. ARGV: token.
_RELEASE = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('del', KEYS[1])
"""

# KEYS: events. ARGV: event digest, now ms, ttl ms, most events kept. 1 if new.
_MARK = """
local added = redis.call('zadd', KEYS[1], 'NX', ARGV[2], ARGV[1])
redis.call('zremrangebyrank', KEYS[1], 0, -(tonumber(ARGV[4]) + 1))
redis.call('pexpire', KEYS[1], ARGV[3])
return added
"""

# Waiting for a busy call polls: start fast (a short turn frees the lock
# soon), back off to a ceiling so many waiters do not hammer Redis.
_FIRST_POLL = 0.002
_MAX_POLL = 0.025


@contextmanager
def redis_errors() -> Iterator[None]:
    """Map redis-py's errors into voicebot's tree."""
    try:
        yield
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        raise StoreUnavailable(f"Redis unreachable: {exc}") from exc
    except redis.exceptions.RedisError as exc:
        if isinstance(exc, redis.exceptions.MovedError):  # a plain redis:// URL naming one node of a cluster
            raise StoreError(f"Redis error: {exc} (REDIS_URL names one node of a Redis Cluster: "
                             "write redis+cluster://host:port,host:port)") from exc
        raise StoreError(f"Redis error: {exc}") from exc


class RedisStore(SessionStore):
    """Takes a ready client, or a URL to build one from (like cachelib's RedisCache)."""

    def __init__(self, client: Any, *, ttl_seconds: float, lease_seconds: float,
                 prefix: str = "voicebot", timeout: float = 2.0, max_connections: int = 64,
                 tls_verify: bool = True, max_lines: int = DEFAULT_MAX_LINES, failover_seconds: float = 0.0,
                 wait_replicas: int = 0, wait_ms: int = 200) -> None:
        super().__init__(ttl_seconds, lease_seconds, max_lines)
        if isinstance(client, str):
            client = connect(client, timeout=timeout, max_connections=max_connections, tls_verify=tls_verify)
        # redis-py types replies as unions over decode_responses; this client returns bytes.
        self.client: Any = client
        # A Redis Cluster runs no script inside a pipeline, and keys of two slots in no pipeline step.
        self.cluster = isinstance(client, redis.cluster.RedisCluster)
        self.failover_seconds = failover_seconds
        # How long this client waits for one answer before it gives up on it (see the fence above).
        self.timeout = timeout
        # Redis's clock (ms) as the last lock taken read it, and the local monotonic time that answer came.
        self._clock: tuple[int, float] | None = None
        # Replicas a turn's write must reach before it is answered, and how long to wait for them.
        self.wait_replicas = wait_replicas
        self.wait_ms = wait_ms
        self.prefix = prefix
        self._active_key = f"{prefix}:active"
        # Keys outlive the session TTL by a grace period: the reaper turns an
        # expired call into its record before Redis forgets it.
        self._ttl_ms = int((ttl_seconds + REAP_GRACE_SECONDS) * 1000)
        self._lease_ms = int(lease_seconds * 1000)
        self._acquire_script = client.register_script(_ACQUIRE)
        self._write_script = client.register_script(_WRITE)
        self._delete_script = client.register_script(_DELETE)
        self._renew_script = client.register_script(_RENEW)
        self._release_script = client.register_script(_RELEASE)
        self._mark_script = client.register_script(_MARK)

    def _do(self, operation: Callable[[], T]) -> T:
        """One step against Redis, tried again through a failover, with redis-py's errors mapped."""
        with redis_errors():
            return patiently(operation, self.failover_seconds)

    def _keys(self, call_id: str) -> list[str]:
        base = f"{self.prefix}:call:{{{call_id}}}"
        return [base + ":lock", base + ":session", base + ":events", base + ":lines"]

    def _fence(self, clock: tuple[int, float] | None) -> int:
        """Redis's clock (ms) past which what is sent now must not run, as this client has given up on it
        by then: its socket timeout, or the webhook's budget (and the second kept for its answer) if sooner.

        ``clock`` pairs a reading of Redis's clock with the local time its
        answer came, no earlier than Redis read it: the fence errs early,
        never late. 0 (no fence) before any reading.
        """
        if clock is None:
            return 0
        server_ms, read_at = clock
        gives_up_in = self.timeout
        left = remaining_in_effect()
        if left is not None:
            gives_up_in = min(gives_up_in, left + 1.0)
        return int(server_ms + (time.monotonic() + gives_up_in - read_at) * 1000)

    def _acquire(self, call_id: str, wait: float, digest: str | None) -> CallRecord:
        keys = self._keys(call_id)
        token = os.urandom(16).hex()
        deadline = time.monotonic() + wait
        pause = _FIRST_POLL
        fenced_out = 0
        while True:
            answer = self._do(lambda: self._acquire_script(
                keys=keys, args=[token, self._lease_ms, digest or "", self._fence(self._clock)]))
            taken, value = answer[0], answer[1]
            self._clock = (int(answer[-1]), time.monotonic())
            if taken == 1:
                data = json.loads(value) if value is not None else None
                record = CallRecord(self, call_id, data, token, seen=bool(answer[2]))
                record.server_clock = self._clock
                return record
            if taken == -1:  # answered past its fence: Redis stalled, or its clock moved (a failover)
                fenced_out += 1
                if fenced_out > 1:
                    raise StoreUnavailable(f"Redis answered call {call_id}'s lock after this worker gave up on it")
                continue  # once more, on the clock just read
            left = deadline - time.monotonic()
            if left <= 0:
                raise CallBusy(f"call {call_id} stayed busy for {wait:.1f}s")
            lock_ttl = value / 1000 if value and value > 0 else pause
            time.sleep(min(pause * random.uniform(0.5, 1.0), left, lock_ttl))
            pause = min(pause * 2, _MAX_POLL)

    def _with_active(self, script: Script, keys: list[str], args_now: Callable[[], list[Any]],
                     active: Callable[[Any], None], *, replicated: bool = False) -> Any:
        """Run ``script`` on ``args_now()`` (asked at each attempt, for its fence) and ``active(pipeline)``
        (the active-call index, another slot); the script's result.

        One round trip on one server. On a cluster, two: the script goes to
        its key's master, and the index to its own. With ``replicated`` and
        ``wait_replicas``, the script's writes have reached that many replicas
        (WAIT, on the connection that wrote them) before this returns, so an
        answered turn outlives its master.
        """
        wait = self.wait_replicas if replicated else 0
        if self.cluster:
            result = self._do(lambda: self._on_key_master(script, keys, args_now(), wait))
            self._do(lambda: self._pipelined(active))
            return result

        def both() -> Any:
            args = args_now()
            pipe = self.client.pipeline(transaction=False)
            # evalsha directly: a Script on a pipeline asks SCRIPT EXISTS first, every time.
            pipe.evalsha(script.sha, len(keys), *keys, *args)
            active(pipe)
            if wait:
                pipe.execute_command("WAIT", wait, self.wait_ms)
            results = pipe.execute(raise_on_error=False)
            result = results[0]
            if isinstance(result, redis.exceptions.NoScriptError):  # Redis restarted, flushed or failed over
                return script(keys=keys, args=args)  # (written where no replica has had time to see it)
            if isinstance(result, Exception):
                raise result
            if wait:
                self._check_replicas(results[-1], wait)
            return result

        return self._do(both)

    def _on_key_master(self, script: Script, keys: list[str], args: list[Any], wait: int) -> Any:
        """The script on the master of its keys' slot, with WAIT on the same connection; a slot that moved
        (MOVED, ASK) goes through the cluster client, which follows it."""
        if not wait:
            return script(keys=keys, args=args)  # a Script reloads itself where it is missing
        node = self.client.get_node_from_key(keys[0])
        pipe = self.client.get_redis_connection(node).pipeline(transaction=False)
        pipe.evalsha(script.sha, len(keys), *keys, *args)
        pipe.execute_command("WAIT", wait, self.wait_ms)
        try:
            result, acked = pipe.execute(raise_on_error=False)
        except redis.exceptions.ConnectionError:
            self.client.nodes_manager.initialize()  # the master is gone: read the topology again
            raise
        if isinstance(result, redis.exceptions.NoScriptError):  # a promoted replica has no script cache
            self.client.get_redis_connection(node).script_load(script.script)
            return self._on_key_master(script, keys, args, wait)
        if isinstance(result, (redis.exceptions.MovedError, redis.exceptions.AskError)):
            return script(keys=keys, args=args)  # moving: written through the redirect, without the wait
        if isinstance(result, Exception):
            raise result
        self._check_replicas(acked, wait)
        return result

    def _check_replicas(self, acked: Any, wanted: int) -> None:
        if isinstance(acked, int) and acked < wanted:
            log.warning("a turn reached %d of the %d replicas REDIS_WAIT_REPLICAS asks for within %d ms: "
                        "a failover now could lose it", acked, wanted, self.wait_ms)

    def _pipelined(self, add: Callable[[Any], Any], transaction: bool = False) -> list[Any]:
        pipe = self.client.pipeline(transaction=transaction)
        add(pipe)
        results: list[Any] = pipe.execute()
        return results

    def _write(self, record: CallRecord, data: Mapping[str, Any], release: bool, digest: str | None,
               lines: Sequence[Mapping[str, Any]]) -> None:
        text = compact_json.dumps(data)
        now = time.time()
        new_call = record.data is None
        args = [record.token, text, self._ttl_ms, 1 if release else 0, self._lease_ms, digest or "",
                int(now * 1000), MAX_EVENTS_PER_CALL, self.max_lines, 0,
                *(compact_json.dumps(line) for line in lines)]

        def args_now() -> list[Any]:
            args[9] = self._fence(record.server_clock)
            return args

        written = self._with_active(self._write_script, self._keys(record.call_id), args_now,
                                    lambda pipe: self._note_active(pipe, record.call_id, now, new_call),
                                    replicated=True)
        if written == -1:
            # Past its fence: nothing was written, and the turn can be told so (the platform sends it again).
            raise StoreUnavailable(f"Redis answered call {record.call_id}'s write after this worker gave up on it")
        if not written:
            record.released = True
            raise LockLost(f"lease on call {record.call_id} ran out before the write")

    def _renew(self, record: CallRecord) -> None:
        renewed = self._do(lambda: self._renew_script(keys=self._keys(record.call_id)[:1],
                                                      args=[record.token, self._lease_ms]))
        if not renewed:
            raise LockLost(f"lease on call {record.call_id} ran out before it was renewed")

    def _note_active(self, pipe: Any, call_id: str, now: float, new_call: bool) -> None:
        pipe.zadd(self._active_key, {call_id: now})
        if new_call:  # calls start all the time: the index stays tidy without /metrics
            # Only calls whose keys are gone too: an expired call stays for the reaper.
            pipe.zremrangebyscore(self._active_key, "-inf", now - self.ttl_seconds - REAP_GRACE_SECONDS)

    def _mark(self, call_id: str, digest: str) -> bool:
        return bool(self._do(lambda: self._mark_script(keys=self._keys(call_id)[2:],
                                                       args=[digest, int(time.time() * 1000), self._ttl_ms,
                                                             MAX_EVENTS_PER_CALL])))

    def lines(self, call_id: str) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self._do(lambda: self.client.lrange(self._keys(call_id)[3], 0, -1))]

    def reap(self, on_expired: OnExpired, limit: int = 100) -> int:
        now = time.time()
        idle = self._do(lambda: self.client.zrangebyscore(self._active_key, "-inf", now - self.ttl_seconds,
                                                          start=0, num=limit))
        reaped = 0
        for raw in idle:
            call_id = raw.decode()
            try:
                with self.locked(call_id, 0.0) as record:
                    last = self._do(lambda: self.client.zscore(self._active_key, call_id))
                    if last is not None and last > now - self.ttl_seconds:
                        continue  # an event came while we looked
                    if record.data is None:
                        self._do(lambda: self.client.zrem(self._active_key, call_id))
                        continue
                    on_expired(call_id, record.data, self.lines(call_id))
                    record.delete()
                    reaped += 1
            except CallBusy:
                continue  # a turn is running: not idle after all
        return reaped

    def touch(self, call_id: str) -> bool:
        _, session, events, lines = self._keys(call_id)

        def expire(pipe: Any) -> None:
            for key in (session, events, lines):  # one slot: a cluster pipeline sends them to one node
                pipe.pexpire(key, self._ttl_ms)

        known = bool(self._do(lambda: self._pipelined(expire))[0])
        if known:
            self._do(lambda: self.client.zadd(self._active_key, {call_id: time.time()}, xx=True))
        return known

    def _delete(self, record: CallRecord) -> None:
        deleted = self._with_active(self._delete_script, self._keys(record.call_id), lambda: [record.token],
                                    lambda pipe: pipe.zrem(self._active_key, record.call_id))
        if not deleted:
            record.released = True
            raise LockLost(f"lease on call {record.call_id} ran out before the delete")

    def _release(self, record: CallRecord) -> None:
        self._do(lambda: self._release_script(keys=self._keys(record.call_id)[:1], args=[record.token]))

    def peek(self, call_id: str) -> dict[str, Any] | None:
        value = self._do(lambda: self.client.get(self._keys(call_id)[1]))
        return json.loads(value) if value is not None else None

    def remember(self, name: str, value: str, *, seconds: float | None = None) -> None:
        ms = self._ttl_ms if seconds is None else int(seconds * 1000)
        self._do(lambda: self.client.set(f"{self.prefix}:alias:{name}", value, px=ms))

    def recall(self, name: str, *, refresh: bool = False) -> str | None:
        key = f"{self.prefix}:alias:{name}"
        value = self._do(lambda: self.client.getex(key, px=self._ttl_ms) if refresh else self.client.get(key))
        return value.decode() if value is not None else None

    def active_calls(self) -> int:
        count: int = self._do(lambda: self.client.zcount(self._active_key, time.time() - self.ttl_seconds, "+inf"))
        return count

    def ping(self) -> None:
        with redis_errors():
            self.client.ping()  # no retry: /readyz says what is true now

    def close(self) -> None:
        self.client.close()

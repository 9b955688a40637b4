"""The stores themselves: TTLs, locks, leases and bounded memory."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import redis

from voicebot.exceptions import CallBusy, LockLost, StoreUnavailable
from voicebot.stores import MemoryStore, RedisStore
from voicebot.stores.base import FRESH_LEASE_SECONDS, REAP_GRACE_SECONDS

GRACE_MS = REAP_GRACE_SECONDS * 1000


@pytest.fixture
def redis_store(redis_url, redis_prefix):
    store = RedisStore(redis_url, ttl_seconds=60, lease_seconds=0.5, prefix=redis_prefix)
    yield store
    store.close()


def test_memory_ttl_slides_with_every_write_and_then_expires():
    clock = [0.0]
    store = MemoryStore(ttl_seconds=100, clock=lambda: clock[0])
    with store.locked("c", 1) as record:
        record.save({"n": 1})
    clock[0] = 99
    with store.locked("c", 1) as record:
        assert record.data == {"n": 1}
        record.save({"n": 2})
    clock[0] = 198
    with store.locked("c", 1) as record:
        assert record.data == {"n": 2}
    clock[0] = 200
    reaped = []
    assert store.reap(lambda call_id, session, lines: reaped.append((call_id, session))) == 1
    assert reaped == [("c", {"n": 2})]  # expired, and handed on for its record first
    with store.locked("c", 1) as record:
        assert record.data is None


def test_memory_stays_bounded_over_a_long_campaign():
    clock = [0.0]
    store = MemoryStore(ttl_seconds=10, clock=lambda: clock[0])
    for n in range(20_000):
        clock[0] = n * 0.01  # 100 new calls a second, each idle after one event
        with store.locked(f"call-{n}", 1) as record:
            record.save({"n": n})
    assert len(store._sessions.entries) <= 1001  # only the last TTL's worth of calls
    assert store._locks == {}  # no lock outlives its users


def test_memory_lock_waits_then_gives_up():
    store = MemoryStore(ttl_seconds=10)
    with store.locked("c", 1):
        started = time.monotonic()
        with pytest.raises(CallBusy):
            with store.locked("c", 0.05):
                pass
        assert time.monotonic() - started >= 0.05
    with store.locked("c", 0.05) as record:  # free again, and the failed wait left nothing behind
        assert record.data is None
    assert store._locks == {}


def test_redis_keys_are_namespaced_hash_tagged_and_expire(redis_store, redis_url, redis_prefix):
    with redis_store.locked("abc-123", 1) as record:
        record.save({"n": 1}, release=True)
    client = redis.Redis.from_url(redis_url)
    key = f"{redis_prefix}:call:{{abc-123}}:session"
    assert client.exists(key)
    assert 59_000 + GRACE_MS < client.pttl(key) <= 60_000 + GRACE_MS  # kept a while for the reaper
    assert not client.exists(f"{redis_prefix}:call:{{abc-123}}:lock")
    client.close()


def test_redis_lease_frees_the_call_of_a_dead_holder(redis_store):
    abandoned = redis_store._acquire("c", wait=1, digest=None)  # taken and never released: a killed worker
    started = time.monotonic()
    with redis_store.locked("c", wait=5) as record:
        waited = time.monotonic() - started
        record.save({"after": True})
    assert 0.2 < waited < 2.0  # the 0.5 s lease ran out, not the 5 s wait
    with pytest.raises(LockLost):
        abandoned.save({"stale": True})  # the late writer cannot clobber the newer history
    with redis_store.locked("c", 1) as record:
        assert record.data == {"after": True}


def test_redis_waiter_gives_up_with_call_busy(redis_url, redis_prefix):
    store = RedisStore(redis_url, ttl_seconds=60, lease_seconds=10, prefix=redis_prefix)
    with store.locked("c", 1):
        with pytest.raises(CallBusy):
            with store.locked("c", 0.1):
                pass
    store.close()


def test_redis_turns_of_one_call_serialize_across_clients(redis_url, redis_prefix):
    """Separate clients stand for separate instances sharing one Redis."""
    stores = [RedisStore(redis_url, ttl_seconds=60, lease_seconds=5, prefix=redis_prefix) for _ in range(4)]

    def bump(store):
        for _ in range(25):
            with store.locked("counter", 5) as record:
                data = record.data or {"n": 0}
                data["n"] += 1
                record.save(data, release=True)

    threads = [threading.Thread(target=bump, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with stores[0].locked("counter", 1) as record:
        assert record.data == {"n": 100}
    for store in stores:
        store.close()


def test_unreachable_redis_is_store_unavailable():
    from .support import free_port

    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", ttl_seconds=60, lease_seconds=1, timeout=0.5)
    with pytest.raises(StoreUnavailable):
        store.ping()
    with pytest.raises(StoreUnavailable):
        with store.locked("c", 1):
            pass


@pytest.fixture(params=["memory", "redis", "cluster", "sentinel"])
def any_store(request):
    if request.param == "memory":
        yield MemoryStore(ttl_seconds=60, lease_seconds=0.5)
        return
    if request.param == "redis":
        yield request.getfixturevalue("redis_store")
        return
    # The same store on a Redis Cluster, and on the master a Sentinel set names.
    servers = request.getfixturevalue(f"redis_{request.param}")
    store = RedisStore(servers.url, ttl_seconds=60, lease_seconds=0.5, prefix=f"vbtest-{uuid.uuid4().hex[:8]}",
                       failover_seconds=6.0)
    yield store
    store.close()


def test_aliases_and_peek(any_store):
    assert any_store.recall("transcribe:t1") is None
    any_store.remember("transcribe:t1", "call-9")
    assert any_store.recall("transcribe:t1") == "call-9"
    assert any_store.peek("call-9") is None
    with any_store.locked("call-9", 1) as record:
        record.save({"channel": {"speaking_id": "s1"}})
        assert any_store.peek("call-9") == {"channel": {"speaking_id": "s1"}}  # no lock needed


def test_what_the_fast_encoder_refuses_is_saved_and_read_back_whole(redis_store):
    # orjson refuses integers past 64 bits and lone surrogates; a tool's arguments or a
    # transcript's JSON may hold them, and the session must still be saved, unchanged.
    session = {"messages": [{"role": "user", "content": "caf\u00e9 \U0001F600 \ud800"}],
               "tool": {"order": 2 ** 70}, "usage": {1: 2}}
    with redis_store.locked("call-big", 1) as record:
        record.save(session)
    assert redis_store.peek("call-big") == {**session, "usage": {"1": 2}}  # keys as json.dumps makes them
    ordinary = {"messages": [{"role": "assistant", "content": "Caf\u00e9 <ok> & \"quoted\""}]}
    with redis_store.locked("call-plain", 1) as record:
        record.save(ordinary)
    assert redis_store.peek("call-plain") == ordinary


def test_renew_keeps_a_slow_holder_ahead_of_its_lease(redis_store):
    with redis_store.locked("c", 1) as record:
        record.renew()
        record.save({"ok": True})
    abandoned = redis_store._acquire("c", wait=1, digest=None)
    with redis_store.locked("c", wait=5):  # waits out the 0.5 s lease
        pass
    with pytest.raises(LockLost):
        abandoned.renew()


def test_a_lease_just_taken_is_not_renewed_again(redis_store, monkeypatch):
    renewals = []
    real = redis_store._renew
    monkeypatch.setattr(redis_store, "_renew", lambda record: renewals.append(record) or real(record))
    with redis_store.locked("c", 1) as record:
        record.renew()  # the lock was taken a moment ago: a round trip would change nothing
        assert renewals == []
        record.leased_at -= FRESH_LEASE_SECONDS  # as if the step before had taken a while
        record.renew()
        assert renewals == [record]
        record.save({"ok": True}, release=True)


def test_a_longer_lease_is_renewed_before_a_step_only_when_the_models_deadline_would_not_fit():
    from voicebot.platforms import DEFAULTS
    from voicebot.stores import build_store, fresh_lease_seconds

    default = {**DEFAULTS, "LLM_TIMEOUT_SECONDS": 5.0}  # the lease: the deadline and 2 s
    assert fresh_lease_seconds(default) == pytest.approx(1.6)  # a step still starts with 5.4 s of lease left
    shortest = {**default, "LOCK_LEASE_SECONDS": 5.5}  # (the settings check wants a hair more)
    assert fresh_lease_seconds(shortest) == pytest.approx(FRESH_LEASE_SECONDS)  # as little slack as ever
    store = build_store(default)
    try:
        with store.locked("c", 1) as record:
            record.leased_at -= 1.0  # a streamed sentence or two later: 6 s of the 7 are left
            renewed = record.leased_at
            record.renew()
            assert record.leased_at == renewed
            record.leased_at -= 1.0
            record.renew()  # 5 s left: less than the model's deadline and 0.4 s
            assert record.leased_at > renewed
            record.save({"ok": True}, release=True)
    finally:
        store.close()


def test_active_calls_count_live_sessions_only(any_store):
    assert any_store.active_calls() == 0
    for call_id in ("a", "b", "c"):
        with any_store.locked(call_id, 1) as record:
            record.save({"n": 1})
    with any_store.locked("b", 1) as record:
        record.delete()
    assert any_store.active_calls() == 2


def test_redis_reloads_its_scripts_after_a_flush():
    """On a Redis of its own: SCRIPT FLUSH empties the script cache of the whole server."""
    from .support import RedisServer

    server = RedisServer().start()
    redis_store = RedisStore(server.url, ttl_seconds=60, lease_seconds=0.5)
    with redis_store.locked("c", 1) as record:
        record.save({"n": 1}, release=True)
    redis.Redis.from_url(server.url).script_flush()
    with redis_store.locked("c", 1) as record:
        assert record.data == {"n": 1}
        record.save({"n": 2}, release=True)
    with redis_store.locked("c", 1) as record:
        assert record.data == {"n": 2}
    redis_store.close()
    server.stop()


def test_events_are_remembered_for_the_whole_life_of_a_call(any_store):
    """Not only the last few: an old event replayed after many newer ones is still known."""
    for n in range(200):
        with any_store.locked("c", 1, event_id=f"event-{n}") as record:
            assert not record.seen
            record.save({"n": n}, release=True, event_id=f"event-{n}")
    with any_store.locked("c", 1, event_id="event-0") as record:
        assert record.seen
    with any_store.locked("c", 1, event_id="event-200") as record:
        assert not record.seen
        record.delete()
    with any_store.locked("c", 1, event_id="event-0") as record:  # a call that ended starts afresh
        assert not record.seen


def test_an_event_not_saved_is_not_remembered(any_store):
    with any_store.locked("c", 1, event_id="e1") as record:
        record.save({"n": 1}, release=True)  # saved without the event: the turn did not finish
    with any_store.locked("c", 1, event_id="e1") as record:
        assert not record.seen


def test_events_marked_without_the_lock(any_store):
    with any_store.locked("c", 1) as record:
        record.save({"n": 1}, release=True)
    assert any_store.mark_event("c", "speech-1") is True
    assert any_store.mark_event("c", "speech-1") is False
    assert any_store.mark_event("c", "speech-2") is True


def test_event_ids_are_stored_as_fixed_size_digests(redis_store, redis_url, redis_prefix):
    with redis_store.locked("c", 1) as record:
        record.save({"n": 1}, release=True, event_id="x" * 5000)
    client = redis.Redis.from_url(redis_url)
    (member,) = client.zrange(f"{redis_prefix}:call:{{c}}:events", 0, -1)
    assert len(member) == 16
    assert 59_000 + GRACE_MS < client.pttl(f"{redis_prefix}:call:{{c}}:events") <= 60_000 + GRACE_MS
    client.close()


def test_touch_restarts_the_ttl_of_a_known_call_only():
    clock = [0.0]
    store = MemoryStore(ttl_seconds=100, clock=lambda: clock[0])
    with store.locked("c", 1) as record:
        record.save({"n": 1}, release=True)
    for minute in range(1, 10):
        clock[0] = minute * 60
        assert store.touch("c")
    assert store.peek("c") == {"n": 1}  # 9 minutes on, with a 100 s TTL
    assert not store.touch("unknown")


def test_redis_touch_and_alias_refresh(redis_store, redis_url, redis_prefix):
    client = redis.Redis.from_url(redis_url)
    with redis_store.locked("c", 1) as record:
        record.save({"n": 1}, release=True)
    client.pexpire(f"{redis_prefix}:call:{{c}}:session", 1000)
    assert redis_store.touch("c")
    assert client.pttl(f"{redis_prefix}:call:{{c}}:session") > 59_000 + GRACE_MS
    assert not redis_store.touch("unknown")
    redis_store.remember("link", "c")
    client.pexpire(f"{redis_prefix}:alias:link", 1000)
    assert redis_store.recall("link", refresh=True) == "c"
    assert client.pttl(f"{redis_prefix}:alias:link") > 59_000 + GRACE_MS
    client.close()


def test_a_checkpoint_saves_and_renews_the_lease(redis_store):
    with redis_store.locked("c", 1) as record:
        for n in range(4):
            time.sleep(0.2)  # 0.8 s in all, past the 0.5 s lease: only the checkpoints keep it
            record.save({"step": n})
        record.save({"step": "done"}, release=True)
    assert redis_store.peek("c") == {"step": "done"}


def test_the_memory_store_caps_live_calls():
    from voicebot.exceptions import StoreFull

    store = MemoryStore(ttl_seconds=60, max_calls=3)
    for call_id in ("a", "b", "c"):
        with store.locked(call_id, 1) as record:
            record.save({"n": 1}, release=True)
    with pytest.raises(StoreFull):
        with store.locked("d", 1) as record:
            record.save({"n": 1}, release=True)
    with store.locked("a", 1) as record:  # a live call goes on
        record.save({"n": 2}, release=True)
    with store.locked("a", 1) as record:
        record.delete()
    with store.locked("d", 1) as record:  # room again once a call ended
        record.save({"n": 1}, release=True)
    assert store._locks == {}


def test_the_redis_active_index_is_pruned_as_calls_start(redis_store, redis_url, redis_prefix):
    """Expired calls leave the index without anyone scraping /metrics."""
    client = redis.Redis.from_url(redis_url)
    client.zadd(f"{redis_prefix}:active", {"long-gone": time.time() - 60 - GRACE_MS / 1000 - 1})
    with redis_store.locked("new-call", 1) as record:
        record.save({"n": 1}, release=True)
    assert client.zrange(f"{redis_prefix}:active", 0, -1) == [b"new-call"]
    client.close()


def test_a_call_ended_after_expiry_but_before_the_reaper_is_not_reaped_again():
    clock = [0.0]
    store = MemoryStore(ttl_seconds=10, clock=lambda: clock[0])
    with store.locked("c", 1) as record:
        record.save({"n": 1}, release=True)
    clock[0] = 11  # expired, not yet reaped
    with store.locked("c", 1) as record:
        assert record.data == {"n": 1}  # still whole for an event that comes now
        record.delete()  # e.g. the call's end event
    assert store.reap(lambda *args: None) == 0

"""A Redis that stalls (SIGSTOP: a paused VM, a slow disk) and then runs what was sent to it meanwhile.

A stall is the common Redis failure. What a worker gave up on (it answered
the platform with an error, and the platform sends the event again) must
not land when Redis wakes: the history would hold the caller's words twice.
"""

from __future__ import annotations

import signal
import threading
import time
import uuid

import pytest
import redis as redis_py
import requests

from voicebot.deadline import within
from voicebot.exceptions import StoreUnavailable
from voicebot.stores import RedisStore

from .support import RedisServer, wait_for
from .test_scale_out import Campaign


@pytest.fixture
def own_redis():
    """A redis-server of this test's own: it is paused, which no other test may see."""
    server = RedisServer().start()
    yield server
    server.process.send_signal(signal.SIGCONT)
    server.stop()


def stalled(server: RedisServer, seconds: float) -> threading.Timer:
    """Pause ``server`` now and wake it ``seconds`` later (the fault's own length, not a wait)."""
    server.process.send_signal(signal.SIGSTOP)
    timer = threading.Timer(seconds, server.process.send_signal, (signal.SIGCONT,))
    timer.start()
    return timer


def settled(server: RedisServer) -> None:
    """Once awake, Redis has run what every earlier connection sent it: only the asking one is left."""
    client = redis_py.Redis.from_url(server.url)
    try:
        wait_for(lambda: len(client.client_list()) == 1, what="Redis to run what was sent while it slept")
    finally:
        client.close()


@pytest.fixture
def store_on(own_redis):
    """A store on the test's own Redis, with a socket timeout of ``timeout``; closed afterwards."""
    made = []

    def make(timeout: float = 0.3) -> RedisStore:
        made.append(RedisStore(own_redis.url, ttl_seconds=60, lease_seconds=30,
                               prefix=f"stall-{uuid.uuid4().hex[:6]}", timeout=timeout))
        return made[-1]

    yield make
    for store in made:
        store.close()


def test_a_write_given_up_on_during_a_stall_never_lands(own_redis, store_on):
    store = store_on(0.3)
    with store.locked("c1", 2) as record:
        record.save({"history": ["one"]}, lines=[{"text": "one"}])
    with store.locked("c1", 2) as record:
        timer = stalled(own_redis, 1.0)
        with pytest.raises(StoreUnavailable):
            record.save({"history": ["one", "two"]}, release=True, lines=[{"text": "two"}])
    timer.join()
    settled(own_redis)
    assert store.peek("c1")["history"] == ["one"]
    assert [line["text"] for line in store.lines("c1")] == ["one"]
    with store.locked("c1", 0.5) as record:  # refused past its fence, the write let the lock go
        record.save({"history": ["one", "two"]}, release=True, lines=[{"text": "two"}])
    assert store.peek("c1")["history"] == ["one", "two"]


def test_a_lock_asked_for_during_a_stall_is_not_taken_when_redis_wakes(own_redis, store_on):
    store = store_on(0.3)
    with store.locked("warm", 1) as record:  # a first reading of Redis's clock
        record.save({"n": 0}, release=True)
    timer = stalled(own_redis, 1.0)
    with pytest.raises(StoreUnavailable):
        with store.locked("c2", 5):
            pass
    timer.join()
    settled(own_redis)
    with store.locked("c2", 0.0) as record:  # no lease of 30 s left behind by nobody
        assert record.data is None


def test_the_fence_keeps_to_the_webhook_budget_when_it_ends_first(store_on):
    store = store_on(5.0)
    with store.locked("c3", 1) as record:
        with within(0.2):  # 0.2 s of the webhook's budget left, and the second kept for its answer
            inside = store._fence(record.server_clock)
        outside = store._fence(record.server_clock)
    assert store._fence(None) == 0  # before any reading of Redis's clock: no fence
    assert 900 <= outside - inside <= 3900 + 100  # 5 s against 1.2 s, less the time between the two


def test_a_healthy_write_sent_again_after_its_answer_was_lost_counts_as_written(store_on):
    store = store_on()
    with store.locked("c4", 1) as record:
        record.save({"n": 1}, release=True)
        record.released = False
        record.save({"n": 1}, release=True)  # as ``patiently`` sends it again: no LockLost
    assert store.peek("c4") == {"n": 1}


@pytest.mark.parametrize("event_ids", [True, False], ids=["with-event-ids", "without-event-ids"])
def test_a_redis_stall_mid_campaign_doubles_and_loses_no_words(event_ids, own_redis, fake_llm, gunicorns):
    """VoIPBin's redelivery (3 retries, 2 s apart) across a 4 s stall, on two workers: every history exact."""
    fake_llm.latency = 0.05
    server = gunicorns({"REDIS_URL": own_redis.url, "REDIS_PREFIX": "stall", "ANTHROPIC_API_KEY": fake_llm.api_key,
                        "ANTHROPIC_BASE_URL": fake_llm.url, "WEB_CONCURRENCY": "2", "WEB_THREADS": "32",
                        "LOG_LEVEL": "WARNING"})
    woke: list[float] = []
    readiness: list[tuple[float, int]] = []
    done = threading.Event()

    def watch_readiness() -> None:
        with requests.Session() as session:
            while not done.is_set():
                status = session.get(server.url + "/readyz", timeout=10).status_code
                readiness.append((time.monotonic(), status))
                done.wait(0.05)

    def stall_once(n: int, turn: int) -> None:
        if n == 0 and turn == 3 and not woke:
            woke.append(0.0)
            timer = stalled(own_redis, 4.0)
            threading.Thread(target=lambda: (timer.join(), woke.append(time.monotonic()))).start()

    watcher = threading.Thread(target=watch_readiness)
    watcher.start()
    calls, turns = 40, 6
    try:
        campaign = Campaign(server.url, calls=calls, turns=turns, event_ids=event_ids, attempts=4,
                            retry_after=2.0).run(stall_once)
        wait_for(lambda: len(woke) == 2, what="the stall to end")
        wait_for(lambda: any(at > woke[1] and status == 200 for at, status in readiness), what="readiness")
    finally:
        done.set()
        watcher.join()
    stall_seen = [status for at, status in readiness if at < woke[1]]
    ready_after = min(at for at, status in readiness if at > woke[1] and status == 200) - woke[1]
    print(f"\nDRILL redis-stall ({'with' if event_ids else 'without'} event ids): Redis paused 4 s mid-campaign; "
          f"{campaign.answered} of {calls * turns} turns answered with exactly their call's history, "
          f"{campaign.redelivered} redelivered, slowest answer {campaign.slowest_answer * 1000:.0f} ms, "
          f"slowest turn {campaign.slowest * 1000:.0f} ms; ready {ready_after:.2f} s after Redis woke")
    assert 503 in stall_seen  # the stall was seen, mid-campaign
    assert campaign.redelivered > 0
    assert campaign.wrong == [], campaign.wrong[:5]
    assert campaign.lost == [], campaign.lost[:5]
    assert campaign.answered == calls * turns
    assert campaign.slowest_answer < 15.0
    assert ready_after < 2.0

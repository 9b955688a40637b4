"""REDIS_URL's cluster and Sentinel shapes: parsing, sessions and records on them, and failovers mid-campaign.

The cluster (3 masters, 3 replicas) and the Sentinel set (a master, a
replica, three Sentinels) are private redis-servers the tests start. The
drills run gunicorn on them, kill a master mid-campaign and print one
``DRILL`` line each.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from voicebot import close_app, create_app
from voicebot_testing.fake_llm import MARKER
from voicebot.records.outbox import RedisOutbox
from voicebot.stores.redis_url import connect, parse
from voicebot.runtime import runtime_of

from .conftest import app_config
from .support import ROOT, Gunicorn, Nginx, needs_nginx, procfile_command, wait_for

SECRET = "s3cret-pass"


@pytest.mark.parametrize("url, kind, described", [
    ("redis://:s3cret-pass@127.0.0.1:6379/0", "single", "Redis (127.0.0.1:6379)"),
    ("unix:///run/redis.sock", "single", "Redis (/run/redis.sock)"),
    ("redis+cluster://:s3cret-pass@10.0.0.1:7000,10.0.0.2:7001", "cluster",
     "Redis Cluster (seeds 10.0.0.1:7000, 10.0.0.2:7001)"),
    ("rediss+cluster://user:s3cret-pass@[::1]:7000", "cluster", "Redis Cluster (seeds ::1:7000)"),
    ("redis+sentinel://:s3cret-pass@h1:26379,h2/mymaster/2", "sentinel",
     "Redis via Sentinel (service 'mymaster', db 2, sentinels h1:26379, h2:26379)"),
])
def test_every_shape_of_redis_url_is_understood_and_never_shows_its_password(url, kind, described):
    target = parse(url)
    assert target.kind == kind and target.describe() == described
    assert SECRET not in target.describe()
    if kind != "single":
        assert target.password == SECRET and target.replicated


@pytest.mark.parametrize("url, words", [
    ("mysql://h/0", "must start with"),
    ("redis+cluster://", "has no host"),
    ("redis+cluster://h:7000/3", "does not have"),
    ("redis+cluster://h:99999", "not a TCP port"),
    ("redis+sentinel://h:26379", "names no service"),
    ("redis+sentinel://h:26379/svc/x", "not a number"),
])
def test_a_bad_redis_url_is_refused_in_one_line(url, words):
    with pytest.raises(ValueError, match=words):
        parse(url)


def test_check_config_names_the_cluster_and_not_its_password():
    env = {"PATH": "/usr/bin:/bin", "REDIS_URL": f"redis+cluster://:{SECRET}@127.0.0.1:7000,127.0.0.1:7001"}
    out = subprocess.run([sys.executable, "-m", "voicebot.cli", "serve", "--check-config"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "Redis Cluster (seeds 127.0.0.1:7000, 127.0.0.1:7001)" in out.stdout and SECRET not in out.stdout


@pytest.mark.parametrize("kind", ["cluster", "sentinel"])
def test_records_are_queued_claimed_and_exported(kind, request):
    servers = request.getfixturevalue(f"redis_{kind}")
    outbox = RedisOutbox(connect(servers.url, timeout=1, max_connections=4), f"vbtest-{uuid.uuid4().hex[:8]}",
                         retention=3600, deliver=True, failover_seconds=6)
    try:
        for n in range(3):
            outbox.add({"id": f"rec_{n}", "call_id": f"c{n}"})
        entries = outbox.due("worker-a", 10)
        assert [e.record["id"] for e in entries] == ["rec_0", "rec_1", "rec_2"]
        assert outbox.due("worker-b", 10) == []  # handed to one worker at a time
        for entry in entries[:2]:
            outbox.done(entry)
        assert outbox.oldest_undelivered() is not None
        assert [r["id"] for r in outbox.export(0)] == ["rec_0", "rec_1", "rec_2"]
    finally:
        outbox.close()


@pytest.mark.parametrize("kind", ["cluster", "sentinel"])
def test_calls_run_whole_on_a_cluster_and_on_sentinel(kind, request, fake_llm):
    servers = request.getfixturevalue(f"redis_{kind}")
    app = create_app(app_config(fake_llm, REDIS_URL=servers.url, REDIS_PREFIX=f"vbtest-{uuid.uuid4().hex[:8]}"))
    try:
        client = app.test_client()
        for call in ("a", "b"):
            assert client.post("/webhook/call-started", json={"call_id": call}).status_code == 200
        for n in range(3):
            for call in ("a", "b"):
                reply = client.post("/webhook/transcript", json={"call_id": call, "transcript": f"mk{call}{n}"})
                assert MARKER.findall(reply.get_json()["response"]) == [f"mk{call}{k}" for k in range(n + 1)]
        assert client.get("/readyz").status_code == 200
        assert "voicebot_active_calls 2.0" in client.get("/metrics").get_data(as_text=True)
        client.post("/webhook/transcript", json={"type": "call.ended", "call_id": "a"})
        (record,) = list(runtime_of(app).records.export(0))
        assert record["call_id"] == "a" and record["turns"] == 3
    finally:
        close_app(app)


class Campaign:
    """Calls of many turns, in parallel threads, through a load balancer or a server, with VoIPBin's
    redelivery: an answer of 5xx, or none, is sent again ``retry_after`` s later, ``attempts`` in all.
    Each turn carries an event id (kept on its redeliveries) unless ``event_ids`` is False, as the
    article's own example sends none."""

    def __init__(self, url: str, calls: int, turns: int, token: str = "", *, event_ids: bool = True,
                 attempts: int = 3, retry_after: float = 1.0) -> None:
        self.url = url
        self.event_ids = event_ids
        self.attempts = attempts
        self.retry_after = retry_after
        self.token = token
        self.calls = calls
        self.turns = turns
        self.answered = 0
        self.redelivered = 0
        self.wrong: list[str] = []
        self.lost: list[str] = []
        self.slowest = 0.0
        self.slowest_answer = 0.0
        self.call_ids: list[str] = []
        self._lock = threading.Lock()

    def run(self, on_turn=None) -> "Campaign":
        with ThreadPoolExecutor(self.calls) as pool:
            list(pool.map(lambda n: self._call(n, on_turn), range(self.calls)))
        return self

    def _call(self, n: int, on_turn) -> None:
        call_id = f"drill-{uuid.uuid4().hex[:8]}-{n}"
        with self._lock:
            self.call_ids.append(call_id)
        with requests.Session() as session:
            if self.token:
                session.headers["Authorization"] = f"Bearer {self.token}"
            for turn in range(self.turns):
                if on_turn is not None:
                    on_turn(n, turn)
                started = time.monotonic()
                answer = self._send(session, call_id, f"mkc{n}t{turn}", f"{call_id}-{turn}")
                took = time.monotonic() - started
                with self._lock:
                    self.slowest = max(self.slowest, took)
                    if answer is None:
                        self.lost.append(f"{call_id} turn {turn}")
                        return
                    self.answered += 1
                    expected = [f"mkc{n}t{t}" for t in range(turn + 1)]
                    if MARKER.findall(answer) != expected:
                        self.wrong.append(f"{call_id} turn {turn}: {answer!r}")
                time.sleep(0.05)  # the caller's next words come a moment later

    def _send(self, session: requests.Session, call_id: str, text: str, event_id: str) -> str | None:
        event = {"call_id": call_id, "transcript": text, **({"event_id": event_id} if self.event_ids else {})}
        for attempt in range(self.attempts):
            if attempt:
                with self._lock:
                    self.redelivered += 1
                time.sleep(self.retry_after)  # the platform's own pause before it sends again
            sent = time.monotonic()
            try:
                answer = session.post(self.url + "/webhook/transcript", timeout=15, json=event)
            except requests.RequestException:
                continue
            finally:
                with self._lock:  # one answer's wait, which the platform cuts at 15 s
                    self.slowest_answer = max(self.slowest_answer, time.monotonic() - sent)
            if answer.status_code < 500:
                return answer.json().get("response") if answer.status_code == 200 else None
        return None


@pytest.mark.parametrize("kind", ["cluster", "sentinel"])
def test_a_master_killed_mid_campaign_costs_no_turn(kind, tmp_path, fake_llm, gunicorns):
    from voicebot_testing.processes import RedisClusterServers, RedisSentinelSet

    servers = (RedisClusterServers(tmp_path / "cluster") if kind == "cluster" else RedisSentinelSet(tmp_path)).start()
    try:
        fake_llm.latency = 0.05
        server = gunicorns({"REDIS_URL": servers.url, "REDIS_PREFIX": "drill", "ANTHROPIC_API_KEY": fake_llm.api_key,
                            "ANTHROPIC_BASE_URL": fake_llm.url, "WEB_CONCURRENCY": "2", "WEB_THREADS": "32",
                            "LOG_LEVEL": "WARNING"})
        killed = threading.Event()

        def kill_once(n: int, turn: int) -> None:
            if turn == 3 and n == 0 and not killed.is_set():
                killed.set()
                if kind == "cluster":
                    servers.kill(servers.ports[0])  # a master, with a third of the slots
                else:
                    servers.kill_master()

        started = time.monotonic()
        campaign = Campaign(server.url, calls=20, turns=8).run(kill_once)
        took = time.monotonic() - started
        print(f"\nDRILL {kind}-failover: a master SIGKILLed mid-campaign; {campaign.answered} of 160 turns "
              f"answered with exactly their call's history, {campaign.redelivered} redelivered, "
              f"slowest {campaign.slowest * 1000:.0f} ms, campaign {took:.1f} s")
        assert killed.is_set()
        assert campaign.lost == [] and campaign.wrong == []
        assert campaign.answered == 160
    finally:
        servers.stop()


def test_gunicorn_serves_a_cluster_url(redis_cluster, fake_llm, tmp_path):
    server = Gunicorn({"REDIS_URL": redis_cluster.url, "REDIS_PREFIX": f"vbtest-{uuid.uuid4().hex[:8]}",
                       "ANTHROPIC_API_KEY": fake_llm.api_key, "ANTHROPIC_BASE_URL": fake_llm.url,
                       "WEB_CONCURRENCY": "2"}).start(tmp_path / "gunicorn.log")
    try:
        assert requests.get(server.url + "/readyz", timeout=5).json() == {"status": "ready"}
        assert "session store: Redis Cluster (seeds" in server.log()
    finally:
        server.stop()


@needs_nginx
def test_three_instances_behind_nginx_through_failover_and_resharding(tmp_path, fake_llm):
    """The article's shape: instances behind a load balancer with no stickiness, sharing a Redis Cluster.

    Mid-campaign: one instance SIGKILLed, then one master SIGKILLed, then a
    third of a master's slots moved onto a new master while calls run. Every
    turn must come back with exactly its call's history, and every call's
    record must be exported once.
    """
    import json
    import os
    import signal

    from voicebot_testing.processes import RedisClusterServers

    cluster = RedisClusterServers(tmp_path / "cluster").start()
    instances: list[Gunicorn] = []
    nginx = None
    try:
        fake_llm.latency = 0.05
        env = {"REDIS_URL": cluster.url, "REDIS_PREFIX": "drill", "ANTHROPIC_API_KEY": fake_llm.api_key,
               "ANTHROPIC_BASE_URL": fake_llm.url, "WEB_CONCURRENCY": "1", "LOG_LEVEL": "WARNING",
               "WEBHOOK_TOKEN": "drill-token"}
        for n in range(3):
            instances.append(Gunicorn(env, command=procfile_command()).start(tmp_path / f"instance-{n}.log"))
        nginx = Nginx(tmp_path, [i.port for i in instances]).start()
        moved = []

        def disturb(n: int, turn: int) -> None:
            if n != 0:
                return
            if turn == 2:  # the whole instance, master and worker, as a lost VM
                for pid in [*instances[0].workers(), instances[0].process.pid]:
                    os.kill(pid, signal.SIGKILL)
            elif turn == 4:
                cluster.kill(cluster.ports[1])
            elif turn == 6:
                cluster.wait_ok()  # the failover over (calls go on meanwhile), then the resharding
                new_master = cluster.add_master()
                moved.append(cluster.move_slots(cluster.ports[2], new_master, 1500))

        started = time.monotonic()
        campaign = Campaign(nginx.url, calls=30, turns=10, token="drill-token").run(disturb)
        took = time.monotonic() - started
        ended = [requests.post(nginx.url + "/webhook/transcript", timeout=15,
                               headers={"Authorization": "Bearer drill-token"},
                               json={"type": "call.ended", "call_id": call_id}).status_code
                 for call_id in campaign.call_ids]
        out = subprocess.run([sys.executable, "-m", "voicebot.cli", "calls", "export"], capture_output=True,
                             text=True, timeout=60, env={**os.environ, **env}, cwd=ROOT)
        records = [json.loads(line) for line in out.stdout.splitlines()]
        print(f"\nDRILL three-instances: 30 calls x 10 turns through nginx (round robin) on a Redis Cluster; an "
              f"instance and a master SIGKILLed, {moved[0] if moved else 0} slots resharded onto a new master "
              f"mid-campaign: {campaign.answered} of 300 turns answered with exactly their history, "
              f"{campaign.redelivered} redelivered, slowest {campaign.slowest * 1000:.0f} ms, {took:.1f} s; "
              f"{len(records)} records exported for 30 calls")
        assert campaign.lost == [], campaign.lost
        assert campaign.wrong == [], campaign.wrong
        assert campaign.answered == 300
        assert moved and moved[0] == 1500
        assert set(ended) == {200}
        assert sorted(r["call_id"] for r in records) == sorted(campaign.call_ids)  # each once
    finally:
        if nginx is not None:
            nginx.stop()
        for instance in instances:
            instance.stop()
        cluster.stop()


@pytest.mark.parametrize("kind", ["cluster", "sentinel"])
def test_a_turn_is_answered_once_a_replica_has_it(kind, request, caplog):
    from voicebot.stores import RedisStore

    servers = request.getfixturevalue(f"redis_{kind}")
    store = RedisStore(servers.url, ttl_seconds=60, lease_seconds=2, prefix=f"vbtest-{uuid.uuid4().hex[:8]}",
                       failover_seconds=6, wait_replicas=1)
    try:
        for n in range(5):
            with store.locked("replicated", 2) as record:
                record.save({"n": n}, release=True, lines=[{"text": f"line {n}"}])
        assert store.peek("replicated")["n"] == 4 and len(store.lines("replicated")) == 5
        assert "replicas REDIS_WAIT_REPLICAS asks for" not in caplog.text  # each write reached its replica
    finally:
        store.close()


def test_a_turn_its_replica_cannot_take_is_still_answered_and_said_so(redis_sentinel, caplog):
    import signal

    from voicebot.stores import RedisStore

    replica = redis_sentinel.replica if redis_sentinel.master_port() == redis_sentinel.master.port \
        else redis_sentinel.master
    store = RedisStore(redis_sentinel.url, ttl_seconds=60, lease_seconds=2, prefix=f"vbtest-{uuid.uuid4().hex[:8]}",
                       wait_replicas=1, wait_ms=100)
    replica.process.send_signal(signal.SIGSTOP)
    try:
        with store.locked("unreplicated", 2) as record:
            record.save({"n": 1}, release=True)
    finally:
        replica.process.send_signal(signal.SIGCONT)
        store.close()
    assert "a turn reached 0 of the 1 replicas" in caplog.text


def test_voipbin_and_twilio_calls_run_on_a_cluster(redis_cluster, make_voipbin_app, make_app, voipbin, fake_llm):
    """Transcribe-to-call links, event dedupe, Twilio's turn dedupe and tombstones, on a cluster."""
    from .test_twilio import PUBLIC, TOKEN, Call
    from .test_voipbin import GREETING, answer, post_event, speak

    on_cluster = {"REDIS_URL": redis_cluster.url, "REDIS_PREFIX": f"vbtest-{uuid.uuid4().hex[:8]}"}
    client = make_voipbin_app(**on_cluster).test_client()
    call_id = answer(client, voipbin)
    assert speak(client, voipbin, call_id, "mk1").get_json() == {"status": "said"}
    assert speak(client, voipbin, call_id, "mk2").get_json() == {"status": "said"}
    assert voipbin.said[call_id] == [GREETING, "Heard mk1.", "Heard mk1 mk2."]
    assert post_event(client, "call_hangup", voipbin.hang_up(call_id)).get_json() == {"status": "ended"}

    app = make_app(TWILIO_AUTH_TOKEN=TOKEN, PUBLIC_URL=PUBLIC, **on_cluster)
    call = Call(app.test_client())
    call.start()
    action = call.action
    call.say("mk1 please")
    asked = len(fake_llm.requests)
    call.action = action  # sent again: answered from the saved reply
    call.say("mk1 please")
    assert call.heard() == "Heard mk1." and len(fake_llm.requests) == asked
    call.say("mk2")
    assert call.heard() == "Heard mk1 mk2."


def test_a_plain_url_naming_one_cluster_node_says_what_to_write(redis_cluster):
    from voicebot.exceptions import StoreError
    from voicebot.stores import RedisStore

    store = RedisStore(f"redis://127.0.0.1:{redis_cluster.ports[0]}/0", ttl_seconds=60, lease_seconds=1,
                       prefix=f"vbtest-{uuid.uuid4().hex[:8]}")
    try:
        with pytest.raises(StoreError, match=r"write redis\+cluster://"):
            for n in range(20):  # some call ids hash to this node's own slots; the others are MOVED
                with store.locked(f"call-{n}", 1) as record:
                    record.save({"n": n}, release=True)
    finally:
        store.close()


def test_an_idle_call_on_a_cluster_is_reaped_into_its_record(redis_cluster):
    from voicebot.stores import RedisStore

    store = RedisStore(redis_cluster.url, ttl_seconds=0.3, lease_seconds=1, prefix=f"vbtest-{uuid.uuid4().hex[:8]}")
    try:
        with store.locked("idle", 1) as record:
            record.save({"call_id": "idle"}, release=True, lines=[{"speaker": "caller", "text": "mk1"}])
        reaped: list = []
        wait_for(lambda: store.reap(lambda call_id, session, lines: reaped.append((call_id, lines))),
                 timeout=10, what="the idle call reaped")
        assert reaped == [("idle", [{"speaker": "caller", "text": "mk1"}])]
        assert store.peek("idle") is None and store.active_calls() == 0
    finally:
        store.close()


def test_a_failover_is_waited_out_only_while_the_webhook_has_time():
    import redis as redis_py

    from voicebot.deadline import Deadline, put_in_effect
    from voicebot.stores.redis_url import patiently

    tries = []

    def lost_master() -> None:
        tries.append(time.monotonic())
        raise redis_py.exceptions.ConnectionError("master lost")

    put_in_effect(Deadline(1.6))  # the webhook has 1.6 s left, a second of which is its answer's
    try:
        started = time.monotonic()
        with pytest.raises(redis_py.exceptions.ConnectionError):
            patiently(lost_master, failover_seconds=6.0)
        took = time.monotonic() - started
    finally:
        put_in_effect(None)
    assert took < 0.6 + 0.1 and len(tries) >= 3  # backed off and tried again, then left time to answer 503
    tries.clear()
    started = time.monotonic()
    with pytest.raises(redis_py.exceptions.ConnectionError):
        patiently(lost_master, failover_seconds=3.0)  # no webhook: the setting alone
    assert 1.0 < time.monotonic() - started < 3.1 and len(tries) >= 6

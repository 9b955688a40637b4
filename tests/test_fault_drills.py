"""Fault drills against a real gunicorn with two workers and a real Redis, on loopback.

Each drill asserts the behaviour and prints one ``DRILL`` line with its
figures: ``pytest tests/test_fault_drills.py -s | grep DRILL``.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from voicebot_testing.fake_llm import MARKER

from .support import Gunicorn, RedisServer, pid_of_connection, wait_for

FALLBACK = "One moment, let me try that again."


@pytest.fixture
def deploy(gunicorns, fake_llm, redis_url, redis_prefix):
    """Start gunicorn (2 workers, Redis) with extra settings; stopped afterwards."""
    def start(redis: str = redis_url, **settings: str) -> Gunicorn:
        env = {
            "REDIS_URL": redis, "REDIS_PREFIX": redis_prefix, "REDIS_TIMEOUT_SECONDS": "0.5",
            "ANTHROPIC_API_KEY": fake_llm.api_key, "ANTHROPIC_BASE_URL": fake_llm.url,
            "WEB_CONCURRENCY": "2", "WEB_THREADS": "64", "LLM_TIMEOUT_SECONDS": "3",
            "FALLBACK_REPLY": FALLBACK, **settings,
        }
        return gunicorns(env)

    return start


def say(server: Gunicorn, call_id: str, text: str, timeout: float = 30) -> requests.Response:
    return requests.post(server.url + "/webhook/transcript",
                         json={"type": "transcript", "call_id": call_id, "transcript": text}, timeout=timeout)


def heard(response: requests.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return MARKER.findall(response.json()["response"])


def ready(server: Gunicorn) -> int:
    return requests.get(server.url + "/readyz", timeout=5).status_code


def test_redis_restarted_mid_campaign(tmp_path, deploy):
    redis = RedisServer(data_dir=tmp_path).start()  # append-only file: data survives the restart
    server = deploy(redis=redis.url)
    calls = [f"restart-{n}" for n in range(10)]
    for n, call_id in enumerate(calls):
        assert heard(say(server, call_id, f"mk{n}a")) == [f"mk{n}a"]

    redis.stop()
    stopped = time.monotonic()
    wait_for(lambda: ready(server) == 503, what="/readyz to report the outage")
    noticed = time.monotonic() - stopped
    during = say(server, calls[0], "mk0x")
    assert during.status_code == 503
    assert during.headers["Content-Type"] == "application/json"
    assert during.json()["error"] == "store_unavailable"

    redis.start()
    restarted = time.monotonic()
    wait_for(lambda: ready(server) == 200, what="/readyz to recover")
    recovered = time.monotonic() - restarted
    for n, call_id in enumerate(calls):
        assert heard(say(server, call_id, f"mk{n}b")) == [f"mk{n}a", f"mk{n}b"]
    redis.stop()
    print(f"\nDRILL redis-restart: /readyz 503 after {noticed:.2f}s; a turn during the outage: "
          f"{during.status_code} {during.json()['error']}; ready {recovered:.2f}s after restart; "
          f"{len(calls)}/{len(calls)} calls went on with their histories")


def test_worker_killed_mid_turn(deploy, fake_llm):
    server = deploy(LLM_TIMEOUT_SECONDS="3")  # lease 5 s
    assert heard(say(server, "killed", "mk1")) == ["mk1"]
    fake_llm.reset()
    fake_llm.latency = 8  # the turn is stuck in the model when its worker dies
    outcome: dict = {}

    def doomed_turn():
        try:
            outcome["response"] = say(server, "killed", "mk2")
        except requests.RequestException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=doomed_turn)
    thread.start()
    wait_for(lambda: fake_llm.peers, what="the turn to reach the model")
    host, port = fake_llm.peers[0]
    victim = pid_of_connection(server.workers(), port, int(fake_llm.url.rsplit(":", 1)[1]))
    assert victim, "could not tell which worker holds the turn"
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    thread.join(30)
    assert "response" not in outcome or outcome["response"].status_code != 200

    fake_llm.latency = 0
    next_turn = say(server, "killed", "mk3")
    waited = time.monotonic() - killed
    assert heard(next_turn) == ["mk1", "mk3"]  # the dead turn left nothing behind
    served_by = {int(pid) for pid in __import__("re").findall(
        r"\[(\d+)\] voicebot\.conversation: turn call_id=killed turn=2", server.log())}
    assert served_by and victim not in served_by
    assert waited < 5 + 6  # within lease + wait, whatever the machine's speed
    print(f"\nDRILL worker-killed: SIGKILL to worker {victim} mid-turn; the call's next turn was answered "
          f"{waited:.2f}s later by worker {served_by.pop()} (lease 5 s), history intact")


def test_sigterm_lets_turns_in_flight_finish(deploy, fake_llm):
    server = deploy()
    fake_llm.reset()
    fake_llm.latency = 1.5
    in_flight = 20
    with ThreadPoolExecutor(in_flight) as pool:
        turns = [pool.submit(say, server, f"term-{n}", f"mk{n}") for n in range(in_flight)]
        wait_for(lambda: len(fake_llm.requests) >= in_flight, what="all turns to reach the model")
        server.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        replies = [future.result() for future in turns]
    finished = time.monotonic() - signalled
    assert [heard(r) for r in replies] == [[f"mk{n}"] for n in range(in_flight)]
    wait_for(lambda: server.process.poll() is not None, timeout=30, what="gunicorn to exit")
    exited = time.monotonic() - signalled
    assert server.process.returncode == 0
    print(f"\nDRILL sigterm: {in_flight} turns in flight at SIGTERM, {in_flight} answered in full "
          f"(last {finished:.2f}s after the signal), gunicorn exited cleanly after {exited:.2f}s")


def test_model_overloaded_or_hanging_then_recovering(deploy, fake_llm):
    server = deploy(LLM_TIMEOUT_SECONDS="1")
    fake_llm.reset()
    fake_llm.hang_seconds = 5
    figures = {}
    for phase, setting in (("529", "fail_rate"), ("hang", "hang_rate")):
        setattr(fake_llm, setting, 1.0)
        with ThreadPoolExecutor(10) as pool:
            def timed(n, phase=phase):
                started = time.monotonic()
                response = say(server, f"llm-{n}", f"mk{n}{phase}")
                return response, time.monotonic() - started
            results = list(pool.map(timed, range(10)))
        setattr(fake_llm, setting, 0.0)
        assert all(r.status_code == 200 and r.json()["response"] == FALLBACK for r, _ in results)
        figures[phase] = max(seconds for _, seconds in results)
    assert figures["hang"] < 1 + 4  # the 1 s deadline, with room for a slow machine
    recovered = [heard(say(server, f"llm-{n}", f"mk{n}ok")) for n in range(10)]
    assert recovered == [[f"mk{n}529", f"mk{n}hang", f"mk{n}ok"] for n in range(10)]
    print(f"\nDRILL llm-outage: 10 concurrent turns per phase all answered with the fallback line; "
          f"slowest answer {figures['529'] * 1000:.0f} ms while the model answered 529, "
          f"{figures['hang'] * 1000:.0f} ms while it hung (deadline 1000 ms); "
          f"every call recovered with its whole history")

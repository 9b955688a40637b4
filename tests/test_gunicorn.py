"""End to end: a real gunicorn with several workers, a real Redis, the real SDK, real HTTP."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from voicebot_testing.fake_llm import MARKER
from voicebot_testing.fake_voipbin import call_event_data, transcript_event_data
from voicebot_testing.simulate import Campaign, format_summary, ok

from .support import Gunicorn, wait_for

CALLS = 50
TURNS = 4
TWILIO_TOKEN = "twilio-token-for-the-gunicorn-tests"


@pytest.fixture
def server(tmp_path, redis_url, redis_prefix, fake_llm, voipbin):
    fake_llm.record = False
    fake_llm.latency, fake_llm.jitter = 0.03, 0.03  # turns overlap, in varying order
    gunicorn = Gunicorn({
        "REDIS_URL": redis_url,
        "REDIS_PREFIX": redis_prefix,
        "ANTHROPIC_API_KEY": fake_llm.api_key,
        "ANTHROPIC_BASE_URL": fake_llm.url,
        "VOIPBIN_WEBHOOK_SECRET": voipbin.webhook_secret,
        "VOIPBIN_ACCESS_KEY": voipbin.access_key,
        "VOIPBIN_API_URL": voipbin.api_url,
        "VOIPBIN_NUMBERS": "+15559870000",
        "VOIPBIN_FETCH_TOKEN": "fetch-token",
        "VOIPBIN_TIMEOUT_SECONDS": "1",
        "TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
        "WEB_CONCURRENCY": "2",
        "WEB_THREADS": "64",
        "LOG_LEVEL": "INFO",
    })
    gunicorn.env["PUBLIC_URL"] = gunicorn.url  # as Twilio is told to call it
    gunicorn.start(tmp_path / "gunicorn.log")
    yield gunicorn
    gunicorn.stop()
    fake_llm.record = True


def test_fifty_simultaneous_calls_never_bleed_across_two_workers(server):
    start_together = threading.Barrier(CALLS)
    problems: list[str] = []

    def post(session, path, body):
        response = session.post(server.url + path, json=body, timeout=30)
        assert response.status_code == 200, (response.status_code, response.text)
        return response.json()

    def transcript(session, call_id, marker):
        reply = post(session, "/webhook/transcript",
                     {"type": "transcript", "call_id": call_id, "caller_num": "+1555", "transcript": marker})
        return MARKER.findall(reply["response"])

    def call(n: int) -> None:
        call_id = f"call-{n}"
        mine: list[str] = []
        with requests.Session() as session:
            start_together.wait()
            post(session, "/webhook/call-started", {"type": "call.started", "call_id": call_id})
            for turn in range(TURNS):
                marker = f"mk{n}x{turn}"
                mine.append(marker)
                heard = transcript(session, call_id, marker)
                if heard != mine:
                    problems.append(f"{call_id} turn {turn}: expected {mine}, heard {heard}")
            if n % 5 == 0:  # two transcripts of this call at the same moment
                both = [f"mk{n}a", f"mk{n}b"]
                with ThreadPoolExecutor(2) as pool, requests.Session() as other:
                    replies = list(pool.map(lambda args: transcript(*args),
                                            [(session, call_id, both[0]), (other, call_id, both[1])]))
                first, second = sorted(replies, key=len)
                if first[:-1] != mine or second != first + [m for m in both if m != first[-1]]:
                    problems.append(f"{call_id} simultaneous turns: {replies} after {mine}")
                mine = second
            post(session, "/webhook/transcript", {"type": "call.ended", "call_id": call_id})

    with ThreadPoolExecutor(CALLS) as pool:
        list(pool.map(call, range(CALLS)))

    # Which worker takes a connection is the kernel's choice, so that is not asserted.
    assert problems == []
    # Both workers' counts, added up by prometheus_client's multi-process mode.
    exposition = requests.get(server.url + "/metrics", timeout=10).text
    turns = CALLS * TURNS + 2 * len(range(0, CALLS, 5))
    assert f'voicebot_turns_total{{outcome="reply"}} {float(turns)}' in exposition
    assert f'voicebot_calls_total{{event="ended"}} {float(CALLS)}' in exposition
    assert "voicebot_active_calls 0.0" in exposition


def test_voipbin_calls_at_once_each_hear_only_their_own_turns(server, voipbin):
    """Signed events through two workers; every transcript also delivered twice at once."""
    url = server.url + "/webhook/voipbin"
    calls = [voipbin.answer_call() for _ in range(30)]
    start_together = threading.Barrier(len(calls))

    def call(call_id: str) -> list[str]:
        start_together.wait()
        answered = voipbin.send(url, "call_progressing", call_event_data(call_id, "progressing"))
        assert answered.status_code == 200, answered.text
        transcribe_id = voipbin.transcribe_of(call_id)
        for turn in range(3):
            data = transcript_event_data(transcribe_id, f"mk{call_id[:8]}x{turn}")
            with ThreadPoolExecutor(2) as pool:  # VoIPBin delivers concurrently and may duplicate
                statuses = sorted(pool.map(
                    lambda _: voipbin.send(url, "transcript_created", data).json()["status"], range(2)))
            assert statuses == ["duplicate", "said"], statuses
        assert voipbin.send(url, "call_hangup", call_event_data(call_id, "hangup")).status_code == 200
        return call_id

    with ThreadPoolExecutor(len(calls)) as pool:
        list(pool.map(call, calls))

    for call_id in calls:
        markers = [f"mk{call_id[:8]}x{turn}" for turn in range(3)]
        assert voipbin.said[call_id] == [
            "Hello! How can I help you today?",
            *("Heard " + " ".join(markers[: n + 1]) + "." for n in range(3)),
        ]
    assert all(t["status"] == "done" for t in voipbin.transcribes.values())


def test_voipbin_redeliveries_at_once_set_each_call_up_once(server, voipbin):
    """A slow API, answers lost after the work was done, and each call_progressing delivered
    three times at once (VoIPBin delivers concurrently and retries): per call, one transcribe,
    one speaking session, one greeting."""
    url = server.url + "/webhook/voipbin"
    voipbin.latency = 0.2
    voipbin.lose_answer["transcribes"] = 3
    voipbin.lose_answer["speakings"] = 3
    calls = [voipbin.answer_call() for _ in range(10)]

    def call(call_id: str) -> list[int]:
        with ThreadPoolExecutor(3) as pool:
            statuses = list(pool.map(lambda _: voipbin.deliver(url, "call_progressing", voipbin.calls[call_id]),
                                     range(3)))
        return [s.status_code if s is not None else 0 for s in statuses]

    with ThreadPoolExecutor(len(calls)) as pool:
        outcomes = list(pool.map(call, calls))
    assert all(200 in statuses for statuses in outcomes), outcomes
    for call_id in calls:
        assert len(voipbin.live("transcribes", call_id)) == 1, call_id
        assert len(voipbin.live("speakings", call_id)) == 1, call_id
        assert voipbin.said[call_id] == ["Hello! How can I help you today?"], call_id


def test_voipbin_calls_handed_over_by_fetch_stay_up(server, voipbin):
    """VoIPBin's flow runner against the fetch loop: answered, greeted, conversing, never hung up."""
    from voicebot_testing.fake_voipbin import FlowRunner

    webhook = server.url + "/webhook/voipbin"
    flow = [{"type": "fetch", "option": {"event_url": server.url + "/webhook/voipbin/fetch?token=fetch-token",
                                         "event_method": "POST"}}]

    def run(n: int) -> tuple[str, list[str]]:
        call_id = f"fetched-{n}-{os.getpid()}"
        said = []

        def on_step(action):
            if action["type"] == "sleep" and voipbin.transcribe_of(call_id):
                data = transcript_event_data(voipbin.transcribe_of(call_id), f"mk{n}x{len(said)}")
                said.append(voipbin.deliver(webhook, "transcript_created", data).json()["status"])

        runner = FlowRunner(voipbin, webhook, flow, max_steps=24, on_step=on_step)
        return runner.run(call_id), said

    with ThreadPoolExecutor(5) as pool:
        results = list(pool.map(run, range(5)))
    for why, said in results:
        assert why == "still up after max_steps"
        assert said and set(said) == {"said"}


def test_thirty_signed_twilio_calls_at_once_across_two_workers(server):
    """Each call follows the TwiML it is given, turn by turn, and hears only its own words."""
    campaign = Campaign([server.url, server.url], contract="twilio", calls=30, turns=4,
                        twilio_token=TWILIO_TOKEN, public_url=server.url)
    summary = campaign.run()
    assert ok(summary), format_summary(summary)
    assert summary["turns"] == 120 and summary["isolation_checked"] and summary["isolation_violations"] == 0
    forged = requests.post(server.url + "/webhook/twilio/voice", timeout=5,
                           data={"CallSid": "CA" + "1" * 32, "From": "+1555"},
                           headers={"X-Twilio-Signature": "c2lnbmVkIGJ5IG5vYm9keQ=="})
    assert forged.status_code == 403
    assert TWILIO_TOKEN not in server.log()


def test_in_memory_store_with_two_workers_refuses_to_start(tmp_path):
    gunicorn = Gunicorn({"REDIS_URL": "", "WEB_CONCURRENCY": "2", "ANTHROPIC_API_KEY": ""})
    gunicorn.start(tmp_path / "gunicorn.log", ready=False)
    assert wait_for(lambda: gunicorn.process.poll() is not None, timeout=30, what="gunicorn to exit")
    assert gunicorn.process.returncode != 0
    log = gunicorn.log()
    assert "refuses to start" in log and "REDIS_URL" in log and "WEB_CONCURRENCY=1" in log


def test_in_memory_store_with_one_worker_serves(tmp_path, fake_llm):
    gunicorn = Gunicorn({"REDIS_URL": "", "WEB_CONCURRENCY": "1", "ANTHROPIC_API_KEY": ""})
    gunicorn.start(tmp_path / "gunicorn.log")
    try:
        reply = requests.post(gunicorn.url + "/webhook/transcript",
                              json={"call_id": "c", "transcript": "Hello there."}, timeout=10)
        assert reply.status_code == 200 and "offline" in reply.json()["response"]
        assert "OFFLINE" in gunicorn.log()
        missing = requests.get(gunicorn.url + "/nowhere", timeout=10)
        assert missing.status_code == 404 and missing.headers["Content-Type"] == "application/json"
    finally:
        gunicorn.stop()


def test_voicebot_serve_runs_from_any_folder(tmp_path):
    """The README's run command: `voicebot serve`, here with gunicorn's --bind passed through."""
    import subprocess
    import sys

    from .support import free_port

    port = free_port()
    env = {**os.environ, "REDIS_URL": "", "ANTHROPIC_API_KEY": "", "WEB_CONCURRENCY": "1"}
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "voicebot.cli", "serve", "--bind", f"127.0.0.1:{port}"],
                               cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: requests.get(url + "/healthz", timeout=1).ok, what="voicebot serve")
        reply = requests.post(url + "/webhook/call-started", json={"call_id": "c"}, timeout=10)
        assert reply.json() == {"greeting": "Hello! How can I help you today?"}
    finally:
        process.terminate()
        process.wait(30)

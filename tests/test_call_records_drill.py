"""Call lifecycle through real gunicorn (2 workers), Redis and a record receiver on loopback.

Each drill prints one ``DRILL`` line with its figures.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
import requests

from voicebot_testing.fake_voipbin import FakeVoipbin, FlowRunner, transcript_event_data

from .support import Gunicorn, RecordReceiver, RedisServer, pid_of_connection, wait_for

HUMANS = "+15550009999"
SECRET = "drill-record-secret"
NUMBER = "+15559870000"


@pytest.fixture
def receiver():
    server = RecordReceiver(SECRET)
    yield server
    server.stop()


@pytest.fixture
def deploy(gunicorns, fake_llm, redis_url, redis_prefix, receiver, voipbin):
    def start(redis: str = redis_url, **settings: str) -> Gunicorn:
        env = {"REDIS_URL": redis, "REDIS_PREFIX": redis_prefix, "ANTHROPIC_API_KEY": fake_llm.api_key,
               "ANTHROPIC_BASE_URL": fake_llm.url, "WEB_CONCURRENCY": "2", "WEB_THREADS": "32",
               "CALL_REPORT_URL": receiver.url, "CALL_REPORT_SECRET": SECRET, "TRANSFER_NUMBER": HUMANS,
               "VOIPBIN_WEBHOOK_SECRET": voipbin.webhook_secret, "VOIPBIN_ACCESS_KEY": voipbin.access_key,
               "VOIPBIN_API_URL": voipbin.api_url, "VOIPBIN_NUMBERS": NUMBER, "VOIPBIN_FETCH_TOKEN": "ft",
               "VOIPBIN_TIMEOUT_SECONDS": "1", "REDIS_TIMEOUT_SECONDS": "0.5", **settings}
        return gunicorns(env)

    return start


def article_call(server: Gunicorn, call_id: str, *words: str) -> list[dict]:
    answers = []
    with requests.Session() as session:
        for text in words:
            answer = session.post(server.url + "/webhook/transcript", json={"call_id": call_id, "transcript": text},
                                  timeout=30)
            assert answer.status_code == 200, answer.text
            answers.append(answer.json())
    return answers


def voipbin_fetch_call(server: Gunicorn, voipbin: FakeVoipbin, call_id: str, *words: str) -> FlowRunner:
    """A call handed over by fetch, as VoIPBin's flow runs it, saying ``words`` one per sleep."""
    webhook = server.url + "/webhook/voipbin"
    to_say = list(words)

    def on_step(action):
        if action["type"] == "sleep" and to_say and voipbin.transcribe_of(call_id):
            data = transcript_event_data(voipbin.transcribe_of(call_id), to_say.pop(0))
            assert voipbin.deliver(webhook, "transcript_created", data).json()["status"] == "said"

    flow = [{"type": "fetch", "option": {"event_url": server.url + "/webhook/voipbin/fetch?token=ft",
                                         "event_method": "POST"}}]
    runner = FlowRunner(voipbin, webhook, flow, max_steps=30, on_step=on_step)
    runner.run(call_id)
    return runner


def test_tools_end_and_transfer_calls_on_both_contracts(deploy, voipbin, receiver):
    server = deploy()
    assert article_call(server, "a-end", "mk1", "goodbye mk2")[-1] == {
        "response": "Heard mk1 mk2.", "action": {"type": "hangup"}}
    assert article_call(server, "a-transfer", "a human please mk1")[-1] == {
        "response": "Heard mk1.", "action": {"type": "transfer", "to": HUMANS}}

    ended = voipbin_fetch_call(server, voipbin, "v-end", "mk1", "bye now mk2")
    assert ended.ended_because == "hung up"  # by the bot, through VoIPBin's API
    assert voipbin.hung_up_by_api == ["v-end"] and voipbin.said["v-end"][-1] == "Heard mk1 mk2."

    transferred = voipbin_fetch_call(server, voipbin, "v-transfer", "mk1", "a human please mk2")
    assert transferred.connected == [{"source": {"type": "tel", "target": NUMBER},
                                      "destinations": [{"type": "tel", "target": HUMANS}]}]
    assert voipbin.live("transcribes", "v-transfer") == [] and voipbin.live("speakings", "v-transfer") == []

    records = wait_for(lambda: len(receiver.by_id()) == 4 and receiver.by_id(), timeout=20, what="4 records")
    reasons = {r["call_id"]: r["end_reason"] for r in records.values()}
    assert reasons == {"a-end": "bot_ended", "a-transfer": "transferred", "v-end": "bot_ended",
                       "v-transfer": "transferred"}
    print(f"\nDRILL call-tools: end_call and transfer_call on both contracts; records {sorted(reasons.items())}")


def test_a_receiver_down_through_restarts_gets_every_record_once(tmp_path, deploy, receiver):
    """The receiver is down while an instance is restarted and Redis restarts (append-only file on)."""
    redis = RedisServer(data_dir=tmp_path).start()
    receiver.down = True
    server = deploy(redis=redis.url)
    calls = [f"down-{n}" for n in range(12)]
    for n, call_id in enumerate(calls):
        article_call(server, call_id, f"mk{n}a", f"mk{n}b")
        requests.post(server.url + "/webhook/transcript", json={"type": "call.ended", "call_id": call_id}, timeout=10)
    wait_for(lambda: receiver.refused >= 1, what="deliveries refused while the receiver is down")

    server.stop()  # an instance restarted...
    redis.stop()  # ...and Redis too
    redis.start()
    server = deploy(redis=redis.url)
    came_up = time.monotonic()
    receiver.down = False
    records = wait_for(lambda: len(receiver.by_id()) == len(calls) and receiver.by_id(), timeout=30,
                       what="every record after the receiver came back")
    took = time.monotonic() - came_up
    redis.stop()

    assert receiver.bad_signatures == 0
    assert sorted(records) == sorted({r["id"] for r in receiver.received})  # duplicates only ever by id
    for n, call_id in enumerate(calls):
        (record,) = [r for r in records.values() if r["call_id"] == call_id]
        assert [line["text"] for line in record["transcript"]] == [f"mk{n}a", f"Heard mk{n}a.", f"mk{n}b",
                                                                   f"Heard mk{n}a mk{n}b."]
    print(f"\nDRILL records-receiver-down: {len(calls)} records kept through an instance and a Redis restart; "
          f"all delivered {took:.2f}s after the receiver came back; {len(receiver.received)} deliveries, "
          f"{len(records)} distinct ids, {receiver.refused} refused while down")


def test_a_worker_killed_during_delivery_loses_no_record(deploy, receiver):
    receiver.hold = 1  # the first delivery hangs: its worker is killed while it waits
    server = deploy()
    article_call(server, "killed-mid-delivery", "mk1")
    requests.post(server.url + "/webhook/transcript", json={"type": "call.ended", "call_id": "killed-mid-delivery"},
                  timeout=10)
    wait_for(lambda: receiver.held_peers, what="a delivery in flight")
    receiver_port = int(receiver.url.split(":")[2].split("/")[0])
    delivering = wait_for(lambda: pid_of_connection(server.workers(), receiver.held_peers[0], receiver_port),
                          what="the worker that is delivering")
    os.kill(delivering, signal.SIGKILL)
    killed = time.monotonic()
    record = wait_for(lambda: receiver.by_id(), timeout=30, what="the record, from another worker")
    took = time.monotonic() - killed
    receiver.release()
    (only,) = record.values()
    assert only["call_id"] == "killed-mid-delivery" and only["transcript"][-1]["text"] == "Heard mk1."
    print(f"\nDRILL records-worker-killed: worker {delivering} SIGKILLed mid-delivery; the record was "
          f"delivered by another {took:.2f}s later")


def test_a_call_that_simply_expires_is_recorded(deploy, receiver):
    server = deploy(SESSION_TTL_SECONDS="2")
    article_call(server, "left-hanging", "mk1", "mk2")
    went_quiet = time.monotonic()
    records = wait_for(lambda: receiver.by_id(), timeout=30, what="the expired call's record")
    took = time.monotonic() - went_quiet
    (record,) = records.values()
    assert record["end_reason"] == "expired" and record["turns"] == 2
    assert [line["text"] for line in record["transcript"]] == ["mk1", "Heard mk1.", "mk2", "Heard mk1 mk2."]
    print(f"\nDRILL records-expiry: a call idle past SESSION_TTL_SECONDS=2 was recorded as expired and "
          f"delivered {took:.2f}s after its last turn")

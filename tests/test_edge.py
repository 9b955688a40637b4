"""The edge: who may call what, a real model deadline, loud missteps, nothing internal shown, bounds."""

from __future__ import annotations

import glob
import logging
import os
import socket
import subprocess
import sys
import time

import pytest
import requests

from voicebot import create_app
from voicebot_testing.fake_llm import MARKER
from voicebot_testing.fake_voipbin import FakeVoipbin, transcript_event_data
from voicebot.runtime import runtime_of

from .conftest import app_config
from .support import ROOT, Gunicorn, RedisServer, TLSProxy, free_port
from .test_voipbin import FETCH_TOKEN, OUR_NUMBER, SECRET, post_event

TRANSCRIPT = "/webhook/transcript"
TOKEN = "s3cret-webhook-token"


def turn(client, call_id, text, **headers):
    return client.post(TRANSCRIPT, json={"call_id": call_id, "transcript": text}, headers=headers)


# -- no anonymous access ---------------------------------------------------------------------

def test_with_a_token_the_articles_endpoints_need_it(make_app):
    client = make_app(WEBHOOK_TOKEN=TOKEN).test_client()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                    {"Authorization": TOKEN}):
        refused = turn(client, "c", "mk1", **headers)
        assert refused.status_code == 401 and refused.get_json()["error"] == "unauthorized"
        assert refused.headers["WWW-Authenticate"] == "Bearer"
        started = client.post("/webhook/call-started", json={"call_id": "c"}, headers=headers)
        assert started.status_code == 401
    assert turn(client, "c", "mk1", Authorization=f"Bearer {TOKEN}").get_json() == {"response": "Heard mk1."}
    assert turn(client, "c", "mk2", Authorization=f"bearer {TOKEN}").get_json() == {"response": "Heard mk1 mk2."}


def test_without_a_token_only_this_machine_is_served(make_app, caplog):
    with caplog.at_level(logging.WARNING, logger="voicebot"):
        client = make_app().test_client()
    assert "WEBHOOK_TOKEN" in caplog.text
    assert turn(client, "c", "mk1").status_code == 200  # the README's curl lines, on the same machine
    for refused in (turn(client, "c", "mk2", **{"X-Forwarded-For": "203.0.113.9"}),  # relayed by a proxy
                    client.post(TRANSCRIPT, json={"call_id": "c", "transcript": "mk2"},
                                environ_base={"REMOTE_ADDR": "203.0.113.9"})):
        assert refused.status_code == 403 and "WEBHOOK_TOKEN" in refused.get_json()["message"]
    assert turn(client, "c", "mk3").get_json() == {"response": "Heard mk1 mk3."}  # nothing refused got in


def test_a_voipbin_call_cannot_be_reached_through_the_articles_endpoints(make_app):
    """Same call id, other contract: no reading back, no words put in, no ending it."""
    with FakeVoipbin() as voipbin:
        client = make_app(WEBHOOK_TOKEN=TOKEN, VOIPBIN_WEBHOOK_SECRET=SECRET, VOIPBIN_ACCESS_KEY=voipbin.access_key,
                          VOIPBIN_API_URL=voipbin.api_url, VOIPBIN_NUMBERS=(OUR_NUMBER,),
                          VOIPBIN_FETCH_TOKEN=FETCH_TOKEN).test_client()
        call_id = voipbin.answer_call()
        post_event(client, "call_progressing", voipbin.calls[call_id])
        transcribe_id = voipbin.transcribe_of(call_id)
        post_event(client, "transcript_created", transcript_event_data(transcribe_id, "mkvictim"))

        auth = {"Authorization": f"Bearer {TOKEN}"}
        probe = turn(client, call_id, "what did I just say mkattacker", **auth)
        assert MARKER.findall(probe.get_json()["response"]) == ["mkattacker"]  # nothing of the victim's
        client.post(TRANSCRIPT, json={"type": "call.ended", "call_id": call_id}, headers=auth)

        post_event(client, "transcript_created", transcript_event_data(transcribe_id, "mkvictim2"))
        assert voipbin.said[call_id][-1] == "Heard mkvictim mkvictim2."  # untouched, still live


def test_metrics_can_be_protected(make_app):
    client = make_app(METRICS_TOKEN="m-token").test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer m-token"}).status_code == 200
    assert make_app().test_client().get("/metrics").status_code == 200


# -- a real model deadline ---------------------------------------------------------------------

def test_a_model_that_trickles_its_answer_is_cut_off_at_the_deadline(make_app, fake_llm):
    client = make_app(LLM_TIMEOUT_SECONDS=0.5, FALLBACK_REPLY="One moment.").test_client()
    fake_llm.trickle = 0.05  # 8 bytes every 50 ms: each read is quick, the whole takes seconds
    started = time.monotonic()
    assert turn(client, "c", "mk1").get_json() == {"response": "One moment.", "fallback": True}
    assert time.monotonic() - started < 0.5 + 1.0


def test_a_slow_name_lookup_is_inside_the_deadline_too(make_app, monkeypatch):
    real = socket.getaddrinfo

    def slow(host, *args, **kwargs):
        if host == "llm.slow-dns.test":
            time.sleep(3)
        return real("127.0.0.1" if host == "llm.slow-dns.test" else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow)
    client = make_app(LLM_TIMEOUT_SECONDS=0.4, FALLBACK_REPLY="One moment.",
                      ANTHROPIC_BASE_URL=f"http://llm.slow-dns.test:{free_port()}").test_client()
    started = time.monotonic()
    assert turn(client, "c", "mk1").get_json() == {"response": "One moment.", "fallback": True}
    assert time.monotonic() - started < 0.4 + 1.0


def test_the_model_is_asked_from_the_turns_own_thread(make_app, fake_llm, monkeypatch):
    """No hand-off to another thread per turn (it cost a loaded worker ~0.7 ms of CPU a turn)."""
    app = make_app()
    llm = runtime_of(app).conversations["article"].llm.inner
    assert turn(app.test_client(), "c", "mk1").get_json() == {"response": "Heard mk1."}
    assert llm is not None
    handed_off = []  # a helper thread looks a host name up (no timeout), and only that: here an address
    from concurrent.futures import ThreadPoolExecutor
    real_submit = ThreadPoolExecutor.submit
    monkeypatch.setattr(ThreadPoolExecutor, "submit",
                        lambda self, *a, **k: handed_off.append(a) or real_submit(self, *a, **k))
    assert turn(app.test_client(), "c", "mk2").get_json() == {"response": "Heard mk1 mk2."}
    assert turn(app.test_client(), "d", "mk3").get_json() == {"response": "Heard mk3."}
    assert handed_off == []


def test_the_model_over_tls_keeps_its_deadline_too(make_app, fake_llm, monkeypatch, tmp_path):
    """The real API is only ever HTTPS: the handshake and reads go through the deadline's streams."""
    proxy = TLSProxy(int(fake_llm.url.rsplit(":", 1)[1])).start()
    try:
        proxy.ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
        monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
        app = make_app(ANTHROPIC_BASE_URL=f"https://127.0.0.1:{proxy.port}", LLM_TIMEOUT_SECONDS=0.5,
                       FALLBACK_REPLY="One moment.")
        client = app.test_client()
        assert turn(client, "c", "mk1").get_json() == {"response": "Heard mk1."}
        fake_llm.trickle = 0.05
        started = time.monotonic()
        assert turn(client, "c", "mk2").get_json() == {"response": "One moment.", "fallback": True}
        assert time.monotonic() - started < 0.5 + 1.0
    finally:
        proxy.stop()


def test_a_turn_that_outlived_its_lease_is_not_answered_as_recorded(fake_llm, redis_url, redis_prefix):
    """Only Redis has a lease (a thread cannot die and leave a memory lock held)."""
    app = create_app(app_config(fake_llm, REDIS_URL=redis_url, REDIS_PREFIX=redis_prefix))
    store = runtime_of(app).conversations["article"].store
    store._lease_ms = 200  # as if the settings check had been bypassed
    fake_llm.latency = 0.5
    response = turn(app.test_client(), "c", "mk1")
    assert response.status_code == 503 and response.get_json()["error"] == "turn_not_recorded"
    fake_llm.latency = 0
    store._lease_ms = 5000
    assert turn(app.test_client(), "c", "mk2").get_json() == {"response": "Heard mk2."}
    store.close()


def test_the_lease_must_outlive_the_models_deadline(fake_llm):
    from voicebot.exceptions import ConfigError

    with pytest.raises(ConfigError, match="LOCK_LEASE_SECONDS"):
        create_app(app_config(fake_llm, LOCK_LEASE_SECONDS=2.0, LLM_TIMEOUT_SECONDS=2.0))


# -- missteps are loud and clear ---------------------------------------------------------------

def test_a_rejected_model_key_is_an_error_a_metric_and_not_ready(make_app, fake_llm, caplog):
    app = make_app(ANTHROPIC_API_KEY="sk-ant-wrong")
    client = app.test_client()
    assert client.get("/readyz").status_code == 200
    with caplog.at_level(logging.ERROR, logger="voicebot"):
        assert turn(client, "c", "mk1").status_code == 200  # the caller hears the fallback
    assert "ANTHROPIC_API_KEY" in caplog.text and "sk-ant-wrong" not in caplog.text
    assert 'voicebot_errors_total{kind="llm_key_rejected"}' in client.get("/metrics").get_data(as_text=True)
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.get_json() == {"status": "unavailable", "reason": "model key rejected"}
    fake_llm.api_key = "sk-ant-wrong"  # the key is fixed on the API's side
    try:
        assert turn(client, "c", "mk2").get_json()["response"] == "Heard mk1 mk2."
        assert client.get("/readyz").status_code == 200
    finally:
        fake_llm.api_key = "test-key"


BAD_SETTINGS = [
    ({"WEB_CONCURRENCY": "abc"}, "WEB_CONCURRENCY='abc' is not valid: must be a number", "abc-never"),
    ({"PORT": "70000"}, "PORT='70000' is not valid: must be a TCP port", "port-never"),
    ({"REDIS_URL": "redis://:hunter2-pass@redis.example.com:notaport/0"},
     "REDIS_URL='redis://:***@redis.example.com:notaport/0' is not valid", "hunter2-pass"),
    ({"LLM_TIMEOUT_SECONDS": "20"}, "LLM_TIMEOUT_SECONDS (20) must leave a second", "never-shown"),
]
START_PATHS = {
    "gunicorn app:app": [sys.executable, "-m", "gunicorn", "app:app"],
    "the Procfile": ["sh", "-c", open(ROOT / "Procfile").read().split(":", 1)[1].strip().replace(
        "python ", f"{sys.executable} ", 1)],
    "voicebot serve": [sys.executable, "-m", "voicebot.cli", "serve"],
    "flask run": [sys.executable, "-m", "flask", "--app", "app", "run"],
}
GUNICORN_READS_IT_FIRST = pytest.mark.xfail(
    reason="gunicorn parses WEB_CONCURRENCY itself while it is imported, before any config file of ours: "
           "bare `gunicorn app:app` with a non-number there ends in gunicorn's traceback; the Procfile and "
           "`voicebot serve` check it first", strict=True)


@pytest.mark.parametrize("path, settings, words, secret", [
    pytest.param(path, *bad, marks=GUNICORN_READS_IT_FIRST if (path, bad[2]) == ("gunicorn app:app", "abc-never")
                 else (), id=f"{bad[2]}-{path}")
    for bad in BAD_SETTINGS for path in START_PATHS])
def test_a_bad_setting_stops_every_start_path_with_one_clear_line(path, settings, words, secret):
    before = set(glob.glob("/dev/shm/voicebot-metrics-*"))
    env = {**os.environ, "PORT": str(free_port()), "REDIS_URL": "", "WEB_CONCURRENCY": "1", **settings}
    done = subprocess.run(START_PATHS[path], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert any(words in line for line in lines), done.stderr
    assert "Traceback" not in done.stderr and secret not in done.stderr + done.stdout
    assert len(lines) <= 2, done.stderr  # the line, and at most the runner's own word that it stopped
    assert set(glob.glob("/dev/shm/voicebot-metrics-*")) <= before  # nothing left behind


# -- nothing internal in public answers --------------------------------------------------------

def test_store_errors_name_no_host_in_public_answers(fake_llm, caplog):
    port = free_port()
    app = create_app(app_config(fake_llm, REDIS_URL=f"redis://127.0.0.1:{port}/0", REDIS_TIMEOUT_SECONDS=0.3))
    client = app.test_client()
    with caplog.at_level(logging.WARNING, logger="voicebot"):
        ready = client.get("/readyz")
        failed = turn(client, "c", "mk1")
    for response in (ready, failed):
        assert response.status_code == 503
        body = response.get_data(as_text=True)
        assert str(port) not in body and "127.0.0.1" not in body and "Error" not in body
    assert failed.get_json()["error"] == "store_unavailable" and failed.headers["Retry-After"] == "1"
    assert str(port) in caplog.text  # the operator still learns where it failed


# -- Redis over TLS with a self-signed certificate (Heroku Redis) -------------------------------

@pytest.fixture
def tls_redis():
    server = RedisServer().start()
    proxy = TLSProxy(server.port).start()
    yield proxy
    proxy.stop()
    server.stop()


def test_a_self_signed_redis_certificate_is_refused_by_default(tls_redis, fake_llm):
    app = create_app(app_config(fake_llm, REDIS_URL=tls_redis.url, REDIS_TIMEOUT_SECONDS=1.0))
    assert app.test_client().get("/readyz").status_code == 503
    assert turn(app.test_client(), "c", "mk1").status_code == 503


def test_redis_tls_verify_off_takes_a_self_signed_certificate(tls_redis, fake_llm):
    app = create_app(app_config(fake_llm, REDIS_URL=tls_redis.url, REDIS_TLS_VERIFY=False))
    client = app.test_client()
    assert client.get("/readyz").status_code == 200
    assert turn(client, "c", "mk1").get_json() == {"response": "Heard mk1."}
    assert turn(client, "c", "mk2").get_json() == {"response": "Heard mk1 mk2."}
    runtime_of(app).conversations["article"].store.close()


# -- bounded -------------------------------------------------------------------------------------

def test_the_memory_store_caps_live_calls_with_a_503(fake_llm):
    client = create_app(app_config(fake_llm, MAX_LIVE_CALLS=2)).test_client()
    assert turn(client, "a", "mk1").status_code == 200
    assert turn(client, "b", "mk1").status_code == 200
    full = turn(client, "c", "mk1")
    assert full.status_code == 503 and full.get_json()["error"] == "too_many_calls"
    assert full.headers["Retry-After"] == "1"
    assert turn(client, "a", "mk2").get_json() == {"response": "Heard mk1 mk2."}  # live calls go on


# -- the deployed service, end to end ------------------------------------------------------------

def test_gunicorn_binds_loopback_unless_told(tmp_path):
    server = Gunicorn({"REDIS_URL": "", "WEB_CONCURRENCY": "1", "ANTHROPIC_API_KEY": ""})
    server.start(tmp_path / "gunicorn.log")
    try:
        assert f"Listening at: http://127.0.0.1:{server.port}" in server.log()
        assert requests.post(server.url + TRANSCRIPT, json={"call_id": "c", "transcript": "hi"}, timeout=10).ok
    finally:
        server.stop()

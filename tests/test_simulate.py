"""voicebot simulate: it passes an isolated server, and catches one that bleeds."""

from __future__ import annotations

import io
import json

import pytest

from voicebot import create_app
from voicebot.cli import main
from voicebot_testing.fake_llm import MARKER
from voicebot_testing.simulate import check_reply

from .conftest import app_config
from .support import ServedApp, free_port


@pytest.mark.parametrize("heard, kind", [
    (["a1", "a2"], None),
    (["a1", "b1"], "bleed"),
    (["a2"], "history_window"),
    (["a1"], "loss"),
    (["a1", "a1"], "duplicate"),
    (["a2", "a1"], "order"),
])
def test_check_reply(heard, kind):
    problem = check_reply(heard, ["a1", "a2"], history=20)
    assert (problem[0] if problem else None) == kind


def test_check_reply_allows_for_the_server_history_bound():
    assert check_reply(["a2", "a3"], ["a1", "a2", "a3"], history=2) is None


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    status = main(["simulate", *args])
    return status, capsys.readouterr().out


def test_an_article_campaign_passes(fake_llm, capsys, tmp_path):
    served = ServedApp(create_app(app_config(fake_llm)))
    report = tmp_path / "summary.json"
    try:
        status, out = run_cli([served.url, served.url, "--calls", "20", "--turns", "3", "--json", str(report)],
                              capsys)
    finally:
        served.stop()
    assert status == 0, out
    assert "RESULT: PASS" in out and "overhead ms" in out
    summary = json.loads(report.read_text())
    assert summary["turns"] == 60 and summary["errors"] == 0 and summary["isolation_violations"] == 0


def test_a_voipbin_campaign_passes_and_reports_the_time_to_first_word(fake_llm, capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(fake_llm, "sentences", 2)
    monkeypatch.setattr(fake_llm, "sentence_gap", 0.05)
    port = free_port()
    app = create_app(app_config(fake_llm, VOIPBIN_WEBHOOK_SECRET="sim-secret", VOIPBIN_ACCESS_KEY="sim-key",
                                VOIPBIN_API_URL=f"http://127.0.0.1:{port}/v1.0",
                                VOIPBIN_NUMBERS=("+15559870000",)))
    served = ServedApp(app)
    try:
        status, out = run_cli([served.url, "--contract", "voipbin", "--calls", "10", "--turns", "3",
                               "--secret", "sim-secret", "--access-key", "sim-key", "--rest-latency", "0.05",
                               "--voipbin-listen", f"127.0.0.1:{port}", "--json", str(tmp_path / "s.json")], capsys)
    finally:
        served.stop()
    assert status == 0, out
    assert "30/30 turns" in out and "isolation violations: 0" in out
    assert "first word ms:" in out and "model's first sentence ms:" in out and "first word beyond it ms:" in out
    assert "time to greeting ms:" in out
    # Each REST request takes 50 ms: the speaking session, then the greeting's say, come first.
    assert json.loads((tmp_path / "s.json").read_text())["greeting_ms"]["p50"] >= 100


def test_a_shed_voipbin_event_is_sent_again_as_voipbin_does(fake_llm, capsys, tmp_path):
    port = free_port()
    app = create_app(app_config(fake_llm, VOIPBIN_WEBHOOK_SECRET="sim-secret", VOIPBIN_ACCESS_KEY="sim-key",
                                VOIPBIN_API_URL=f"http://127.0.0.1:{port}/v1.0",
                                VOIPBIN_NUMBERS=("+15559870000",)))
    real, shed = app.wsgi_app, []

    def sheds_one_transcript(environ, start_response):  # as an instance at capacity answers
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        environ["wsgi.input"] = io.BytesIO(body)
        if b"transcript_created" in body and not shed:
            shed.append(body)
            start_response("503 SERVICE UNAVAILABLE", [("Content-Type", "application/json"), ("Retry-After", "1")])
            return [b'{"error": "overloaded"}']
        return real(environ, start_response)

    app.wsgi_app = sheds_one_transcript
    served = ServedApp(app)
    report = tmp_path / "summary.json"
    try:
        status, out = run_cli([served.url, "--contract", "voipbin", "--calls", "3", "--turns", "2",
                               "--secret", "sim-secret", "--access-key", "sim-key", "--json", str(report),
                               "--voipbin-listen", f"127.0.0.1:{port}"], capsys)
    finally:
        served.stop()
    assert status == 0, out
    summary = json.loads(report.read_text())
    assert summary["redelivered_by_status"] == {"503": 1} and summary["errors"] == 0 and summary["turns"] == 6
    assert summary["latency_ms"]["max"] >= 1000  # the caller waited through the second it took
    assert "redelivered: 1" in out


def test_a_twilio_campaign_passes_signed_against_the_public_url(fake_llm, capsys):
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    served = ServedApp(create_app(app_config(fake_llm, TWILIO_AUTH_TOKEN="sim-token", PUBLIC_URL=public)),
                       port=port)
    try:
        status, out = run_cli([served.url, "--contract", "twilio", "--calls", "10", "--turns", "3",
                               "--twilio-token", "sim-token", "--public-url", public], capsys)
        assert status == 0, out
        assert "30/30 turns" in out and "isolation violations: 0" in out and "time to greeting ms:" in out
        status, out = run_cli([served.url, "--contract", "twilio", "--calls", "2", "--turns", "1",
                               "--twilio-token", "not-the-token"], capsys)
        assert status == 1 and "http_403" in out
    finally:
        served.stop()


def test_a_server_that_mixes_calls_up_fails_the_campaign(capsys):
    from flask import Flask, jsonify, request

    leaky = Flask("leaky")
    seen: list[str] = []

    @leaky.post("/webhook/<path:anything>")
    def everything(anything):
        # One history for everybody: the article's bug of a global session.
        seen.extend(MARKER.findall(request.get_json().get("transcript", "")))
        return jsonify(greeting="hi", response="Heard " + " ".join(seen) + ".", status="ended")

    served = ServedApp(leaky)
    try:
        status, out = run_cli([served.url, "--calls", "3", "--turns", "2"], capsys)
    finally:
        served.stop()
    assert status == 1
    assert "isolation violations" in out and "bleed" in out and "RESULT: FAIL" in out


def test_errors_are_counted_and_fail_the_campaign(capsys):
    status, out = run_cli([f"http://127.0.0.1:{free_port()}", "--calls", "2", "--turns", "1", "--wait", "0"], capsys)
    assert status == 1
    assert "connection" in out and "RESULT: FAIL" in out


def test_a_server_that_never_comes_up_is_said_in_one_line(capsys):
    status = main(["simulate", f"http://127.0.0.1:{free_port()}", "--calls", "1", "--wait", "0.3"])
    assert status == 2
    assert "did not answer /healthz within 0.3 s" in capsys.readouterr().err


def test_a_token_protected_deployment_is_simulated_with_its_token(capsys, fake_llm, monkeypatch):
    served = ServedApp(create_app(app_config(fake_llm, WEBHOOK_TOKEN="sim-token")))
    try:
        monkeypatch.setenv("WEBHOOK_TOKEN", "sim-token")
        status, out = run_cli([served.url, "--calls", "3", "--turns", "2"], capsys)
        assert status == 0 and "RESULT: PASS" in out
        monkeypatch.delenv("WEBHOOK_TOKEN")
        status, out = run_cli([served.url, "--calls", "1", "--turns", "1", "--token", "wrong"], capsys)
        assert status == 1
    finally:
        served.stop()


def test_against_a_real_model_it_reports_and_says_isolation_was_not_checked(capsys, monkeypatch):
    """A model that does not echo markers (here the offline responder) is no isolation failure."""
    served = ServedApp(create_app({"ANTHROPIC_API_KEY": "", "REDIS_URL": ""}))
    try:
        status, out = run_cli([served.url, "--calls", "5", "--turns", "2"], capsys)
    finally:
        served.stop()
    assert status == 0, out
    assert "isolation: not checked" in out and "voicebot fake-llm" in out and "RESULT: PASS" in out


def test_a_busy_port_for_the_fake_voipbin_is_one_clear_line(capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status = main(["simulate", "http://127.0.0.1:9", "--contract", "voipbin", "--voipbin-listen",
                       f"127.0.0.1:{port}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and "--voipbin-listen" in err[0]


def test_a_twilio_relay_campaign_through_gunicorn_two_workers_and_redis(fake_llm, capsys, redis_url, redis_prefix,
                                                                        tmp_path):
    """simulate plays ConversationRelay's side (signed handshake, setup, prompts, an interrupt, a key, hang-up)."""
    from .support import Gunicorn

    server = Gunicorn({"REDIS_URL": redis_url, "REDIS_PREFIX": redis_prefix, "ANTHROPIC_API_KEY": fake_llm.api_key,
                       "ANTHROPIC_BASE_URL": fake_llm.url, "WEB_CONCURRENCY": "2", "TWILIO_AUTH_TOKEN": "sim-token",
                       "TWILIO_MODE": "relay"})
    server.env["PUBLIC_URL"] = server.url
    server.start(tmp_path / "gunicorn.log")
    try:
        status, out = run_cli([server.url, "--contract", "twilio-relay", "--calls", "20", "--turns", "3",
                               "--twilio-token", "sim-token", "--public-url", server.url], capsys)
    finally:
        server.stop()
    assert status == 0, out
    assert "60/60 turns" in out and "isolation violations: 0" in out and "first word" in out
    assert server.log().count("reply cut by the caller") == 20  # each call's interrupt kept what was heard


@pytest.mark.parametrize("dialect", ["openai", "vapi", "elevenlabs"])
def test_a_custom_llm_campaign_passes_in_each_dialect_and_ends_each_call_with_its_record(fake_llm, capsys, dialect):
    from voicebot.runtime import runtime_of

    app = create_app(app_config(fake_llm, COMPLETIONS_TOKEN="sim-completions", ELEVENLABS_WEBHOOK_SECRET="sim-el"))
    served = ServedApp(app)
    try:
        status, out = run_cli([served.url, "--contract", dialect, "--calls", "10", "--turns", "3",
                               "--token", "sim-completions", "--elevenlabs-secret", "sim-el"], capsys)
        assert status == 0, out
        assert "30/30 turns" in out and "isolation violations: 0" in out
        platform = "completions" if dialect == "openai" else dialect
        records = [r for r in runtime_of(app).records.export(0) if r["platform"] == platform]
        # Vapi's and ElevenLabs' reports end their calls; a generic client's end at voicebot's end or the TTL.
        assert len(records) == (0 if dialect == "openai" else 10)
        status, out = run_cli([served.url, "--contract", dialect, "--calls", "1", "--turns", "1",
                               "--token", "not-the-token"], capsys)
        assert status == 1 and "http_401" in out
    finally:
        served.stop()


def test_telnyx_relay_and_retell_campaigns_pass_and_end_each_call_with_its_record(fake_llm, capsys):
    """simulate plays Telnyx's side (Ed25519-signed TeXML, the unsigned socket its ticket opens, an interrupt)
    and Retell's (its call API, known calls only, the socket's streamed responses)."""
    from voicebot.runtime import runtime_of
    from voicebot_testing.fake_telnyx import TelnyxSigner

    pair = TelnyxSigner()
    retell_port = free_port()
    port = free_port()
    app = create_app(app_config(fake_llm, TELNYX_PUBLIC_KEY=pair.public_key, PUBLIC_URL=f"http://127.0.0.1:{port}",
                                RETELL_API_KEY="sim-retell", RETELL_API_URL=f"http://127.0.0.1:{retell_port}"))
    served = ServedApp(app, port)
    try:
        status, out = run_cli([served.url, "--contract", "telnyx-relay", "--calls", "8", "--turns", "3",
                               "--telnyx-private-key", pair.private_key], capsys)
        assert status == 0, out
        assert "24/24 turns" in out and "isolation violations: 0" in out
        status, out = run_cli([served.url, "--contract", "retell", "--calls", "8", "--turns", "3",
                               "--retell-api-key", "sim-retell", "--retell-listen", f"127.0.0.1:{retell_port}"],
                              capsys)
        assert status == 0, out
        assert "24/24 turns" in out and "isolation violations: 0" in out

        def ended(platform: str) -> int:
            return len([r for r in runtime_of(app).records.export(0) if r["platform"] == platform])

        from .support import wait_for
        wait_for(lambda: ended("telnyx") == 8 and ended("retell") == 8, timeout=15, what="one record per call")
        status, out = run_cli([served.url, "--contract", "telnyx-relay", "--calls", "1", "--turns", "1",
                               "--telnyx-private-key", TelnyxSigner().private_key], capsys)
        assert status == 1 and "http_403" in out  # signed with another account's key
    finally:
        served.stop()

"""Telnyx's TeXML ConversationRelay: webhooks signed with Ed25519, each socket tied by its ticket to the signed
webhook that announced it, the relay itself Twilio's (shared)."""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET

import pytest
from simple_websocket import ConnectionClosed, ConnectionError as HandshakeRefused

from voicebot.exceptions import ConfigError
from voicebot.runtime import runtime_of
from voicebot_testing.fake_telnyx import TelnyxSigner, call_fields, new_call_sid, open_relay

from .conftest import model_settings
from .support import Gunicorn, ServedApp, free_port, wait_for
from .test_twilio_relay import hang_up, prompt, reply

SIGNER = TelnyxSigner()


@pytest.fixture
def telnyx(make_app, request, store_kind):
    if store_kind == "redis":
        request.getfixturevalue("redis_prefix")
    served = []

    def serve(**more):
        port = free_port()
        public = f"http://127.0.0.1:{port}"
        app = make_app(TELNYX_PUBLIC_KEY=SIGNER.public_key, PUBLIC_URL=public, **more)
        served.append((app, ServedApp(app, port)))
        return app, public

    yield serve
    for app, server in served:
        slots = runtime_of(app).socket_slots
        wait_for(lambda: slots._value == slots._initial_value, timeout=10, what="the relay sessions' end")
        server.stop()


def records_of(app) -> list[dict]:
    return list(runtime_of(app).records.export(0))


def relay_url(twiml: str) -> str:
    return ET.fromstring(twiml).find("Connect/ConversationRelay").get("url")


def announce(public: str, sid: str) -> str:
    answer = SIGNER.post(f"{public}/webhook/telnyx/voice", call_fields(sid))
    assert answer.status_code == 200, answer.text
    return answer.text


def test_voice_answers_conversation_relay_with_the_greeting_and_a_ticketed_socket(telnyx):
    app, public = telnyx(GREETING="Hello from the clinic.")
    sid = new_call_sid()
    relay = ET.fromstring(announce(public, sid)).find("Connect/ConversationRelay")
    assert relay.get("welcomeGreeting") == "Hello from the clinic."
    assert relay.get("url").startswith(public.replace("http://", "ws://") + "/webhook/telnyx/relay?call=v3")
    assert "ticket=" in relay.get("url")


@pytest.mark.parametrize("how", ["forged", "stale", "unsigned"])
def test_a_forged_or_stale_signature_gets_403_and_nothing_else(telnyx, fake_llm, how):
    app, public = telnyx()
    sid = new_call_sid()
    url = f"{public}/webhook/telnyx/voice"
    if how == "forged":
        answer = SIGNER.post(url, call_fields(sid), signer=TelnyxSigner())
    elif how == "stale":
        answer = SIGNER.post(url, call_fields(sid), timestamp=int(time.time()) - 6 * 60)
    else:
        import requests
        answer = requests.post(url, data=call_fields(sid), timeout=10)
    assert answer.status_code == 403 and answer.json()["error"] == "invalid_signature"
    conversation = runtime_of(app).conversations["telnyx"]
    assert conversation.peek(sid) is None and fake_llm.requests == []


def test_each_prompt_is_a_streamed_turn_and_barge_in_keeps_what_was_heard(telnyx, fake_llm, monkeypatch):
    monkeypatch.setattr(fake_llm, "sentences", 3)
    app, public = telnyx()
    sid = new_call_sid()
    ws = open_relay(relay_url(announce(public, sid)), sid)
    try:
        prompt(ws, "hello mk1")
        text, _ = reply(ws)
        assert text.startswith("Heard mk1.")
        monkeypatch.setattr(fake_llm, "sentence_gap", 0.5)
        prompt(ws, "and mk2")
        first = json.loads(ws.receive(timeout=10))
        ws.send(json.dumps({"type": "interrupt", "utteranceUntilInterrupt": first["token"].strip(),
                            "durationUntilInterruptMs": 900}))
        reply(ws)
        monkeypatch.setattr(fake_llm, "sentence_gap", 0.0)
        prompt(ws, "mk3")
        text, _ = reply(ws)
        assert text.startswith("Heard mk1 mk2 mk3.")
        history = runtime_of(app).conversations["telnyx"].peek(sid)["messages"]
        assert history[3]["content"] == first["token"].strip()  # what the caller heard, not what was written
    finally:
        hang_up(ws)
    wait_for(lambda: records_of(app), timeout=10, what="the record: the socket closed is the call ended")
    assert records_of(app)[0]["platform"] == "telnyx"


def test_a_socket_no_signed_webhook_announced_gets_not_a_word(telnyx, fake_llm):
    app, public = telnyx()
    sid = new_call_sid()
    ws_base = public.replace("http://", "ws://") + "/webhook/telnyx/relay"
    with pytest.raises(HandshakeRefused) as refused:
        open_relay(f"{ws_base}?call={sid}&ticket=made-up-ticket", sid)
    assert refused.value.status_code == 403
    url = relay_url(announce(public, sid))
    first = open_relay(url, sid)
    with pytest.raises(HandshakeRefused):
        open_relay(url, sid)  # the same URL again, replayed from a log: the ticket is held
    other = new_call_sid()
    announce(public, other)
    crossed = url.replace(sid.replace(":", "%3A"), other.replace(":", "%3A"))
    assert crossed != url
    with pytest.raises(HandshakeRefused):  # one call's ticket does not open another's socket
        open_relay(crossed, other)
    hang_up(first)
    assert fake_llm.requests == []


def test_a_setup_naming_another_call_is_closed_without_a_word(telnyx, fake_llm):
    app, public = telnyx()
    sid, other = new_call_sid(), new_call_sid()
    ws = open_relay(relay_url(announce(public, sid)), other)
    with pytest.raises(ConnectionClosed):
        while True:
            raw = ws.receive(timeout=10)
            assert raw is None or json.loads(raw)["type"] != "text"
    assert fake_llm.requests == []


def test_hand_off_ends_the_session_and_relay_end_dials(telnyx, fake_llm):
    app, public = telnyx(TRANSFER_NUMBER="+15550009999")
    sid = new_call_sid()
    ws = open_relay(relay_url(announce(public, sid)), sid)
    try:
        prompt(ws, "mk1 [transfer] a person please")
        _, messages = reply(ws)
        end = messages[-1] if messages[-1]["type"] == "end" else json.loads(ws.receive(timeout=10))
        assert end["type"] == "end" and json.loads(end["handoffData"])["reason"] == "transfer"
    finally:
        hang_up(ws)
    answer = SIGNER.post(f"{public}/webhook/telnyx/relay-end", call_fields(sid, HandoffData=end["handoffData"]))
    assert ET.fromstring(answer.text).find("Dial").text == "+15550009999"
    assert SIGNER.post(f"{public}/webhook/telnyx/status", call_fields(sid, CallStatus="completed")).status_code == 200
    wait_for(lambda: records_of(app), timeout=10, what="the record")
    assert len(records_of(app)) == 1 and records_of(app)[0]["end_reason"] == "transferred"


def test_a_bad_public_key_or_no_public_url_is_refused_at_start(make_app):
    with pytest.raises(ConfigError):
        make_app(TELNYX_PUBLIC_KEY="not-a-key", PUBLIC_URL="https://bot.example.com")
    with pytest.raises(ConfigError):
        make_app(TELNYX_PUBLIC_KEY=SIGNER.public_key)


def test_off_without_its_key(make_app):
    answer = make_app().test_client().post("/webhook/telnyx/voice", data={})
    assert answer.status_code == 404 and answer.get_json()["error"] == "telnyx_disabled"


def test_telnyx_calls_through_gunicorn_two_workers_and_redis(fake_llm, redis_url, redis_prefix, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    proc = Gunicorn({"REDIS_URL": redis_url, "REDIS_PREFIX": redis_prefix, **model_settings(fake_llm),
                     "WEB_CONCURRENCY": "2", "WEB_THREADS": "64", "TELNYX_PUBLIC_KEY": SIGNER.public_key})
    proc.env["PUBLIC_URL"] = proc.url
    proc.start(tmp_path / "telnyx-gunicorn.log")
    try:
        def one_call(n: int) -> list[str]:
            sid = new_call_sid()
            ws = open_relay(relay_url(announce(proc.url, sid)), sid)
            try:
                heard = []
                for turn in (1, 2):
                    prompt(ws, f"call{n} mk{turn}")
                    heard.append(reply(ws)[0])
                return heard
            finally:
                hang_up(ws)

        with ThreadPoolExecutor(10) as pool:
            answers = list(pool.map(one_call, range(10)))
    finally:
        proc.stop()
    for answer in answers:
        assert answer[0].startswith("Heard mk1.") and answer[1].startswith("Heard mk1 mk2.")

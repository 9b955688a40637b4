"""Retell's custom LLM: its socket at /retell/{call_id}, each call proven by Retell's API before a word,
each response_required a streamed turn that a newer one supersedes, and its signed webhooks."""

from __future__ import annotations

import json
import time

import pytest
from simple_websocket import ConnectionClosed, ConnectionError as HandshakeRefused

from voicebot.runtime import runtime_of
from voicebot_testing.fake_retell import FakeRetell, RetellSocket, new_call_id

from .conftest import model_settings
from .support import Gunicorn, ServedApp, wait_for

KEY = "key_retell_for_tests"


@pytest.fixture
def fake_retell():
    with FakeRetell(KEY) as server:
        yield server


@pytest.fixture
def retell(make_app, request, store_kind, fake_retell):
    """voicebot with Retell on, on a real HTTP server (a WebSocket needs one): its ws:// base and its app."""
    if store_kind == "redis":
        request.getfixturevalue("redis_prefix")
    served = []

    def serve(**more):
        app = make_app(RETELL_API_KEY=KEY, RETELL_API_URL=fake_retell.api_url, **more)
        server = ServedApp(app)
        served.append((app, server))
        return app, server.url

    yield serve
    for app, server in served:
        slots = runtime_of(app).socket_slots
        wait_for(lambda: slots._value == slots._initial_value, timeout=15, what="the Retell sessions' end")
        server.stop()


def ws_url(base: str, call_id: str) -> str:
    return base.replace("http://", "ws://") + f"/retell/{call_id}"


def records_of(app) -> list[dict]:
    return list(runtime_of(app).records.export(0))


def session_of(app, call_id):
    conversation = runtime_of(app).conversations["retell"]
    return conversation.store.peek(conversation.key(call_id))


def test_a_call_retell_does_not_know_gets_no_socket_no_word_and_no_model(retell, fake_retell, fake_llm):
    app, base = retell()
    stranger = new_call_id()
    with pytest.raises(HandshakeRefused) as refused:
        RetellSocket(ws_url(base, stranger))
    assert refused.value.status_code == 403
    assert fake_retell.asked == [stranger]  # Retell's API was asked, and said no
    ended = fake_retell.register(status="ended")
    with pytest.raises(HandshakeRefused):
        RetellSocket(ws_url(base, ended))
    assert fake_llm.requests == [] and session_of(app, stranger) is None and session_of(app, ended) is None


@pytest.mark.parametrize("hostile", ["error", "not_json", "huge", "gzip_bomb", "other_call", "redirect"])
def test_a_hostile_answer_from_retells_api_opens_nothing(retell, fake_retell, fake_llm, hostile):
    app, base = retell()
    call_id = fake_retell.register()
    fake_retell.misbehave = hostile
    with pytest.raises(HandshakeRefused) as refused:
        RetellSocket(ws_url(base, call_id))
    assert refused.value.status_code == 503
    assert session_of(app, call_id) is None and fake_llm.requests == []
    fake_retell.misbehave = ""
    RetellSocket(ws_url(base, call_id)).close()  # Retell answering again: the call is served


def test_a_known_call_is_greeted_and_each_response_required_is_a_streamed_turn(
        retell, fake_retell, fake_llm, monkeypatch):
    monkeypatch.setattr(fake_llm, "sentences", 2)
    app, base = retell(GREETING="Hello {{name}}, this is the clinic.")
    call_id = fake_retell.register(variables={"name": "Ada"}, from_number="+15550001111")
    retell_side = RetellSocket(ws_url(base, call_id))
    try:
        assert retell_side.config["config"]["auto_reconnect"] is True
        assert retell_side.begin == {"response_type": "response", "response_id": 0,
                                     "content": "Hello Ada, this is the clinic.", "content_complete": True}
        first = retell_side.say("I would like mk1")
        text, last = retell_side.response(first)
        assert text.startswith("Heard mk1.") and last["content_complete"] is True and "end_call" not in last
        second = retell_side.say("and mk2 too")
        text, _ = retell_side.response(second)
        assert text.startswith("Heard mk1 mk2.")
        retell_side.ws.send(json.dumps({"interaction_type": "ping_pong", "timestamp": 1733600000123}))
        assert retell_side.receive() == {"response_type": "ping_pong", "timestamp": 1733600000123}
        session = session_of(app, call_id)
        assert session["caller"] == "+15550001111" and session["turns"] == 2
        assert session["variables"] == {"name": "Ada"}  # Retell's dynamic variables fill {{name}}
    finally:
        retell_side.close()


def test_a_newer_response_required_supersedes_the_one_streaming(retell, fake_retell, fake_llm, monkeypatch):
    """Nothing of the old response_id after the new one begins; the history keeps what was heard, once."""
    monkeypatch.setattr(fake_llm, "sentences", 4)
    monkeypatch.setattr(fake_llm, "sentence_gap", 0.4)
    app, base = retell()
    call_id = fake_retell.register()
    retell_side = RetellSocket(ws_url(base, call_id))
    try:
        old = retell_side.say("tell me about mk1")
        piece = retell_side.receive()
        assert piece["response_id"] == old and piece["content"] and not piece["content_complete"]
        retell_side.transcript.append({"role": "agent", "content": piece["content"]})  # heard this much
        new = retell_side.say("wait, mk2")
        text, _ = retell_side.response(new)  # asserts every event it reads is the new response's
        assert text.startswith("Heard mk1 mk2.")  # each marker once: the old words were not taken twice
        third = retell_side.say("and mk3")
        text, _ = retell_side.response(third)
        assert text.startswith("Heard mk1 mk2 mk3.")
        history = session_of(app, call_id)["messages"]
        assert history[1]["role"] == "assistant" and history[1]["content"] == piece["content"].strip()
    finally:
        retell_side.close()


def test_a_response_superseded_before_its_first_word_leaves_no_trace(retell, fake_retell, fake_llm, monkeypatch):
    monkeypatch.setattr(fake_llm, "latency", 0.6)
    app, base = retell()
    call_id = fake_retell.register()
    retell_side = RetellSocket(ws_url(base, call_id))
    try:
        retell_side.say("mk1")
        new = retell_side.say("mk2")  # the caller went on before a word of the first answer came
        text, _ = retell_side.response(new)
        assert text.startswith("Heard mk1 mk2.")
        wait_for(lambda: session_of(app, call_id)["turns"] == 1, timeout=5, what="one turn in the history")
    finally:
        retell_side.close()


def test_the_goodbye_ends_the_call_with_end_call_and_one_record(retell, fake_retell, fake_llm):
    app, base = retell()
    call_id = fake_retell.register()
    retell_side = RetellSocket(ws_url(base, call_id))
    try:
        retell_side.say("mk1 [hangup] thanks, goodbye")
        text, last = retell_side.response()
        assert last["end_call"] is True and last["content_complete"] is True
        wait_for(lambda: records_of(app), timeout=10, what="the call's record")
        fake_retell.end(call_id, "agent_hangup")
    finally:
        retell_side.close()
    records = records_of(app)
    assert len(records) == 1 and records[0]["call_id"] == call_id and records[0]["platform"] == "retell"


def test_signed_webhooks_end_the_call_and_forged_or_stale_ones_are_refused(retell, fake_retell, fake_llm):
    app, base = retell()
    call_id = fake_retell.register()
    retell_side = RetellSocket(ws_url(base, call_id))
    try:
        retell_side.response(retell_side.say("mk1"))
        fake_retell.end(call_id, "user_hangup")
        hook = f"{base}/retell/webhook"
        assert fake_retell.webhook(hook, "call_ended", call_id, key="not-the-key").status_code == 401
        stale = int((time.time() - 6 * 60) * 1000)
        assert fake_retell.webhook(hook, "call_ended", call_id, stamp_ms=stale).status_code == 401
        assert records_of(app) == []
        assert fake_retell.webhook(hook, "call_started", call_id).status_code == 204
        assert fake_retell.webhook(hook, "call_ended", call_id).status_code == 204
        assert fake_retell.webhook(hook, "call_ended", call_id).status_code == 204  # sent again: one record
    finally:
        retell_side.close()
    records = records_of(app)
    assert len(records) == 1 and records[0]["end_reason"] == "hung_up"
    with pytest.raises(HandshakeRefused):  # an ended call is not reopened, even while Retell says it is live
        fake_retell.calls[call_id]["call_status"] = "ongoing"
        RetellSocket(ws_url(base, call_id))


def test_a_second_socket_for_a_live_call_is_refused_and_a_socket_closed_for_good_ends_it(
        retell, fake_retell, fake_llm):
    app, base = retell()
    call_id = fake_retell.register()
    retell_side = RetellSocket(ws_url(base, call_id))
    with pytest.raises(HandshakeRefused) as refused:
        RetellSocket(ws_url(base, call_id))  # someone who read the call id in a log
    assert refused.value.status_code == 409
    retell_side.response(retell_side.say("mk1"))
    fake_retell.end(call_id, "user_hangup")
    retell_side.close()
    wait_for(lambda: records_of(app), timeout=10, what="the record of a call whose socket closed for good")
    assert records_of(app)[0]["end_reason"] == "hung_up"


def test_a_dropped_socket_of_a_live_call_reopens_with_its_history(retell, fake_retell, fake_llm):
    app, base = retell()
    call_id = fake_retell.register()
    retell_side = RetellSocket(ws_url(base, call_id))
    retell_side.response(retell_side.say("mk1"))
    transcript = retell_side.transcript
    retell_side.close()  # the network dropped it; Retell reconnects (auto_reconnect)
    wait_for(lambda: "retell_socket" not in session_of(app, call_id)["channel"], timeout=10,
             what="the socket's hold let go")
    again = RetellSocket(ws_url(base, call_id))
    try:
        assert again.begin["content"] == ""  # no second greeting
        again.transcript = transcript
        again.response_id = 1
        text, _ = again.response(again.say("mk2"))
        assert text.startswith("Heard mk1 mk2.") and records_of(app) == []
    finally:
        again.close()


def test_junk_on_the_socket_is_counted_and_closes_it(retell, fake_retell, fake_llm, caplog):
    app, base = retell()
    retell_side = RetellSocket(ws_url(base, fake_retell.register()))
    try:
        for n in range(100):
            retell_side.ws.send("junk" if n % 2 else json.dumps({"interaction_type": "no-such-thing"}))
    except (ConnectionClosed, OSError):
        pass
    with pytest.raises(ConnectionClosed):
        while True:
            retell_side.receive(timeout=10)
    assert len([r for r in caplog.records if "retell message" in r.getMessage()]) == 1
    assert fake_llm.requests == []


def test_off_without_its_key(make_app):
    client = make_app().test_client()
    answer = client.post("/retell/webhook", json={})
    assert answer.status_code == 404 and answer.get_json()["error"] == "retell_disabled"


def test_retell_calls_through_gunicorn_two_workers_and_redis(
        fake_llm, fake_retell, redis_url, redis_prefix, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    proc = Gunicorn({"REDIS_URL": redis_url, "REDIS_PREFIX": redis_prefix, **model_settings(fake_llm),
                     "WEB_CONCURRENCY": "2", "WEB_THREADS": "64", "RETELL_API_KEY": KEY,
                     "RETELL_API_URL": fake_retell.api_url})
    proc.start(tmp_path / "retell-gunicorn.log")
    try:
        def one_call(n: int) -> list[str]:
            call_id = fake_retell.register()
            side = RetellSocket(ws_url(proc.url, call_id))
            try:
                return [side.response(side.say(f"call{n} mk{turn}"))[0] for turn in (1, 2, 3)]
            finally:
                fake_retell.end(call_id)
                side.close()

        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(one_call, range(12)))
    finally:
        proc.stop()
    for answer in answers:
        assert [a.split(".")[0] for a in answer] == ["Heard mk1", "Heard mk1 mk2", "Heard mk1 mk2 mk3"]

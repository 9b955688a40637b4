"""Twilio's ConversationRelay (TWILIO_MODE=relay): one signed WebSocket per call, the reply streamed as text tokens."""

from __future__ import annotations

import json
import socket
import time
import xml.etree.ElementTree as ET
from urllib.parse import parse_qs

import pytest
import requests
from voicebot.runtime import runtime_of
from voicebot_testing.ws_client import Client, ConnectionClosed, ConnectionError as HandshakeRefused
from twilio.request_validator import RequestValidator

from .conftest import model_settings
from .support import Gunicorn, Nginx, ServedApp, free_port, needs_nginx, wait_for
from .test_twilio import TOKEN, call_fields, new_sid, post, records_of, session_of

HUMANS = "+15550009999"


@pytest.fixture
def fake_llm(any_model):
    """Every test here holds for both model APIs: Anthropic's Messages and OpenAI's Chat Completions."""
    return any_model


@pytest.fixture
def relay(make_app, request, store_kind):
    """voicebot in relay mode on a real HTTP server (a WebSocket needs one)."""
    if store_kind == "redis":
        request.getfixturevalue("redis_prefix")  # set up first, so its keys are cleaned after the sessions end
    served = []

    def serve(**more):
        port = free_port()
        public = f"http://127.0.0.1:{port}"
        app = make_app(TWILIO_AUTH_TOKEN=TOKEN, PUBLIC_URL=public, TWILIO_MODE="relay", **more)
        server = ServedApp(app, port)
        served.append((app, server))
        return app, public

    yield serve
    for app, server in served:
        # Every relay session has finished (its socket's call ended) before the store is cleaned up.
        slots = runtime_of(app).socket_slots
        wait_for(lambda: slots._value == slots._initial_value, timeout=10, what="the relay sessions' end")
        server.stop()


def socket_url(public: str) -> str:
    return public.replace("http://", "ws://") + "/webhook/twilio/relay"


def relay_url_of(twiml: str | bytes) -> str:
    """The socket URL /voice gave: it names the call and carries its ticket."""
    return ET.fromstring(twiml).find("Connect/ConversationRelay").get("url")


def on_host(url: str, public: str) -> str:
    """The same socket URL as reached at ``public`` (another instance, or a proxy in front)."""
    return socket_url(public) + "?" + url.split("?", 1)[1]


def connect(url: str, token: str = TOKEN) -> Client:
    """Open the socket as Twilio does: the handshake signed over the whole URL, its query included."""
    headers = {"X-Twilio-Signature": RequestValidator(token).compute_signature(url, {})} if token else {}
    ws = Client.connect(url, headers=headers)
    # setup and the first prompt go out back to back: without this, Nagle holds the prompt for a delayed ACK.
    ws.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return ws


def setup(ws: Client, sid: str) -> None:
    ws.send(json.dumps({"type": "setup", "sessionId": "VX" + "0" * 32, "accountSid": "AC" + "0" * 32,
                        "callSid": sid, "from": "+15551230000", "to": "+15559870000", "direction": "inbound",
                        "callStatus": "RINGING", "customParameters": {}}))


def announce(app, public: str, sid: str) -> str:
    """Twilio asks /voice for the call and gets <Connect><ConversationRelay>: the socket's URL."""
    return relay_url_of(post(app.test_client(), f"{public}/webhook/twilio/voice",
                             call_fields(sid, CallStatus="ringing")).data)


def voice_over_http(url: str, sid: str) -> str:
    """/voice asked over real HTTP, signed (a gunicorn or nginx in front): the socket URL it answers."""
    fields = call_fields(sid, CallStatus="ringing")
    signature = RequestValidator(TOKEN).compute_signature(f"{url}/webhook/twilio/voice", fields)
    twiml = requests.post(f"{url}/webhook/twilio/voice", data=fields, headers={"X-Twilio-Signature": signature},
                          timeout=10).text
    assert "<ConversationRelay" in twiml, twiml
    return on_host(relay_url_of(twiml), url)


def start(app, public: str, sid: str) -> tuple[Client, str]:
    """Twilio asks /voice, opens the socket on the URL it was given and sends setup."""
    url = announce(app, public, sid)
    ws = connect(url)
    setup(ws, sid)
    return ws, url


def reply(ws: Client, timeout: float = 10.0) -> tuple[str, list[dict]]:
    """The text tokens of one talk cycle, up to last: true (and what else came)."""
    tokens, messages = [], []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        raw = ws.receive(timeout=deadline - time.monotonic())
        if raw is None:
            break
        message = json.loads(raw)
        messages.append(message)
        if message["type"] == "text":
            tokens.append(message["token"])
            if message["last"]:
                break
        elif message["type"] == "end":
            break
    return "".join(tokens).strip(), messages


def hang_up(ws: Client) -> None:
    """The caller's side closes (after voicebot's ``end`` it may be closed already)."""
    try:
        ws.close()
    except ConnectionClosed:
        pass


def prompt(ws: Client, text: str) -> None:
    ws.send(json.dumps({"type": "prompt", "voicePrompt": text, "lang": "en-US", "last": True}))


def test_voice_answers_connect_conversation_relay_with_the_greeting(relay):
    app, public = relay()
    sid = new_sid()
    root = ET.fromstring(post(app.test_client(), f"{public}/webhook/twilio/voice",
                              call_fields(sid, CallStatus="ringing")).data)
    connect_verb = root.find("Connect")
    assert connect_verb.get("action") == f"{public}/webhook/twilio/relay-end"
    relay_noun = connect_verb.find("ConversationRelay")
    url, query = relay_noun.get("url").split("?")
    assert url == socket_url(public) and parse_qs(query)["call"] == [sid] and len(parse_qs(query)["ticket"][0]) >= 22
    assert relay_noun.get("welcomeGreeting") == app.config["GREETING"]
    assert relay_noun.get("interruptible") == "speech" and relay_noun.get("dtmfDetection") == "true"


def test_each_prompt_is_a_turn_streamed_back_in_tokens(relay, fake_llm):
    app, public = relay()
    sid = new_sid()
    ws, _ = start(app, public, sid)
    try:
        prompt(ws, "hello mk1")
        assert reply(ws)[0] == "Heard mk1."
        prompt(ws, "and mk2")
        assert reply(ws)[0] == "Heard mk1 mk2."  # the same conversation: the history is the call's
    finally:
        hang_up(ws)
    wait_for(lambda: records_of(app), timeout=10, what="the record, the socket closed without end")
    (record,) = records_of(app)
    assert record["end_reason"] == "hung_up" and [line["text"] for line in record["transcript"]][1:] == [
        "hello mk1", "Heard mk1.", "and mk2", "Heard mk1 mk2."]


def test_the_first_sentence_leaves_before_the_model_has_written_the_rest(relay, fake_llm, monkeypatch):
    monkeypatch.setattr(fake_llm, "sentences", 3)
    monkeypatch.setattr(fake_llm, "sentence_gap", 0.4)
    app, public = relay()
    ws, _ = start(app, public, new_sid())
    try:
        prompt(ws, "tell me mk1")
        first = json.loads(ws.receive(timeout=10))
        first_at = time.monotonic()
        said, messages = reply(ws)
        assert first["type"] == "text" and first["token"].startswith("Heard mk1.")
        assert time.monotonic() - first_at >= 0.6  # the rest came as it was written
        assert len([m for m in messages if m["type"] == "text" and m["token"]]) >= 2
    finally:
        hang_up(ws)


def test_an_interrupt_stops_the_reply_and_the_history_keeps_what_was_heard(relay, fake_llm, monkeypatch):
    monkeypatch.setattr(fake_llm, "sentences", 4)
    monkeypatch.setattr(fake_llm, "sentence_gap", 0.5)
    app, public = relay()
    sid = new_sid()
    ws, _ = start(app, public, sid)
    try:
        prompt(ws, "tell me everything mk1")
        first = json.loads(ws.receive(timeout=10))
        ws.send(json.dumps({"type": "interrupt", "utteranceUntilInterrupt": "Heard mk1.",
                            "durationUntilInterruptMs": 900}))
        _, messages = reply(ws)
        sent = [first["token"], *(m["token"] for m in messages if m["type"] == "text")]
        assert len([t for t in sent if t]) < 4  # the reply stopped when the caller talked
        # The turn is saved, then cut to what was heard, just after its last token went out.
        wait_for(lambda: session_of(app, sid)["messages"][-1] == {"role": "assistant", "content": "Heard mk1."},
                 timeout=10, what="the history to keep what the caller heard")
        prompt(ws, "wait mk2")
        assert reply(ws)[0].startswith("Heard mk1 mk2.")
    finally:
        hang_up(ws)


def test_a_key_press_reaches_the_model_as_the_callers_input(relay, fake_llm):
    app, public = relay()
    ws, _ = start(app, public, new_sid())
    try:
        ws.send(json.dumps({"type": "dtmf", "digit": "1"}))
        reply(ws)
        assert "pressed 1" in json.dumps(fake_llm.requests[-1]["messages"][-1])
    finally:
        hang_up(ws)


@pytest.mark.parametrize("words, reason, verb", [("goodbye mk1", "hangup", "Hangup"),
                                                 ("a human please mk1", "transfer", "Dial")])
def test_ending_and_hand_off_send_end_and_the_action_url_says_what_next(relay, fake_llm, words, reason, verb):
    app, public = relay(TRANSFER_NUMBER=HUMANS)
    sid = new_sid()
    ws, _ = start(app, public, sid)
    try:
        prompt(ws, words)
        said, messages = reply(ws)
        if messages[-1]["type"] != "end":
            _, more = reply(ws)
            messages += more
        end = messages[-1]
        assert end["type"] == "end" and json.loads(end["handoffData"])["reason"] == reason
    finally:
        hang_up(ws)
    # end goes out first; the record is made as the turn ends, a moment later.
    (record,) = wait_for(lambda: records_of(app), timeout=10, what="the call's record")
    assert record["end_reason"] == ("bot_ended" if reason == "hangup" else "transferred")
    after = post(app.test_client(), f"{public}/webhook/twilio/relay-end",
                 {**call_fields(sid), "HandoffData": end["handoffData"], "SessionStatus": "completed"})
    root = ET.fromstring(after.data)
    assert root.find(verb) is not None
    if verb == "Dial":
        assert root.find("Dial").text == HUMANS


def test_an_unsigned_handshake_opens_nothing(relay):
    app, public = relay()
    url = announce(app, public, new_sid())
    with pytest.raises(HandshakeRefused, match="403"):
        connect(url, token="")
    with pytest.raises(HandshakeRefused, match="403"):
        connect(url, token="not-the-token")
    assert records_of(app) == []


def test_a_socket_for_a_call_no_signed_webhook_announced_gets_not_a_word(relay, fake_llm):
    """Even with a valid signature over its URL (Twilio's key), a made-up call has no ticket: refused before the
    upgrade, no model spent, no record."""
    app, public = relay()
    sid = new_sid()
    for url in (f"{socket_url(public)}?call={sid}&ticket=made-up-ticket-000000",
                f"{socket_url(public)}?call={sid}", socket_url(public)):
        with pytest.raises(HandshakeRefused, match="403"):
            connect(url)
    assert fake_llm.requests == [] and records_of(app) == []


def test_a_replayed_handshake_cannot_take_over_a_live_call_nor_reopen_an_ended_one(relay, fake_llm):
    """The attack: one captured handshake (URL and X-Twilio-Signature, from a proxy's log) opened any call's
    socket, forever. Now the URL names the call and its single-use ticket, inside what Twilio signs."""
    app, public = relay()
    sid, other = new_sid(), new_sid()
    ws, url = start(app, public, sid)
    other_url = announce(app, public, other)
    captured = {"X-Twilio-Signature": RequestValidator(TOKEN).compute_signature(url, {})}
    try:
        prompt(ws, "hello mk1")
        assert reply(ws)[0] == "Heard mk1."
        # The same handshake again, while the call is live: refused before any upgrade.
        with pytest.raises(HandshakeRefused, match="403"):
            Client.connect(url, headers=captured)
        # The captured signature on another call's URL (or the call swapped in the query): not Twilio's.
        swapped = url.replace(sid, other)
        for forged in (other_url, swapped):
            with pytest.raises(HandshakeRefused, match="403"):
                Client.connect(forged, headers=captured)
        prompt(ws, "still me mk2")
        assert reply(ws)[0] == "Heard mk1 mk2."  # the real call went on, untouched
    finally:
        hang_up(ws)
    wait_for(lambda: records_of(app), timeout=10, what="the call's record")
    with pytest.raises(HandshakeRefused, match="403"):  # the call has ended: its URL opens nothing
        Client.connect(url, headers=captured)
    # The other call's own first socket still opens: tickets are per call.
    second = connect(other_url)
    setup(second, other)
    prompt(second, "other mk9")
    assert reply(second)[0] == "Heard mk9."
    hang_up(second)
    (first_record, *_) = records_of(app)
    assert [line["text"] for line in first_record["transcript"]][1:] == [
        "hello mk1", "Heard mk1.", "still me mk2", "Heard mk1 mk2."]


def test_a_setup_naming_another_call_is_closed_without_a_word(relay, fake_llm):
    app, public = relay()
    sid, victim = new_sid(), new_sid()
    url = announce(app, public, sid)
    announce(app, public, victim)
    ws = connect(url)
    setup(ws, victim)  # the ticket is sid's; setup names the victim
    with pytest.raises(ConnectionClosed):
        ws.receive(timeout=10)
        ws.receive(timeout=10)
    assert fake_llm.requests == []
    assert session_of(app, victim)["messages"] == []


def test_a_ticket_not_used_in_time_is_stale(relay, monkeypatch):
    from voicebot import socket_ticket

    monkeypatch.setattr(socket_ticket, "TICKET_SECONDS", -1.0)  # given already stale
    app, public = relay()
    url = announce(app, public, new_sid())
    with pytest.raises(HandshakeRefused, match="403"):
        connect(url)


def test_an_interrupt_never_makes_the_history_longer_than_what_was_said(relay, fake_llm):
    """utteranceUntilInterrupt was kept verbatim: 21 kB of it grew the next model request past MAX_REPLY_CHARS."""
    app, public = relay()
    sid = new_sid()
    ws, _ = start(app, public, sid)
    try:
        prompt(ws, "hello mk1")
        assert reply(ws)[0] == "Heard mk1."
        ws.send(json.dumps({"type": "interrupt", "utteranceUntilInterrupt": "Heard mk1. " + "x" * 15_000,
                            "durationUntilInterruptMs": 900}))
        wait_for(lambda: session_of(app, sid)["transcript_lines"] >= 4, timeout=10, what="the cut")
        assert session_of(app, sid)["messages"][-1] == {"role": "assistant", "content": "Heard mk1."}
        prompt(ws, "next mk2")
        reply(ws)
        assert len(json.dumps(fake_llm.requests[-1]["messages"])) < 1_000
    finally:
        hang_up(ws)


def test_relay_calls_through_gunicorn_two_workers_and_redis(fake_llm, redis_url, redis_prefix, monkeypatch,
                                                            tmp_path):
    """Concurrent relay calls on the Procfile's server: each socket holds a thread; each call keeps its history."""
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setattr(fake_llm, "sentences", 2)
    monkeypatch.setattr(fake_llm, "sentence_gap", 0.3)
    proc = Gunicorn({"REDIS_URL": redis_url, "REDIS_PREFIX": redis_prefix, **model_settings(fake_llm),
                     "WEB_CONCURRENCY": "2", "WEB_THREADS": "64",
                     "TWILIO_AUTH_TOKEN": TOKEN, "TWILIO_MODE": "relay"})
    proc.env["PUBLIC_URL"] = proc.url
    proc.start(tmp_path / "relay-gunicorn.log")
    firsts: list[float] = []
    try:
        def one_call(n: int) -> list[str]:
            sid = new_sid()
            ws = connect(voice_over_http(proc.url, sid))
            setup(ws, sid)
            heard = []
            try:
                for turn in (1, 2):
                    asked = time.monotonic()
                    prompt(ws, f"call{n} mk{turn}")
                    first = json.loads(ws.receive(timeout=15))
                    firsts.append(time.monotonic() - asked)
                    rest, _ = reply(ws)
                    heard.append((first["token"] + " " + rest).strip())
            finally:
                hang_up(ws)
            return heard

        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(one_call, range(12)))
    finally:
        proc.stop()
    for answer in answers:
        assert answer[0].startswith("Heard mk1.") and answer[1].startswith("Heard mk1 mk2.")
    firsts.sort()
    print(f"\nDRILL relay-gunicorn: 12 concurrent relay calls x 2 turns over 2 workers and Redis; first token "
          f"p50 {firsts[len(firsts) // 2] * 1000:.0f} ms, max {firsts[-1] * 1000:.0f} ms after the prompt "
          f"(the fake model's first sentence comes at once, its second {0.3 * 1000:.0f} ms later)")


def test_a_deploy_hands_live_relay_calls_back_and_another_instance_goes_on(fake_llm, redis_url, redis_prefix,
                                                                           tmp_path):
    """SIGTERM: the socket closes after its turn, without end (no record); Twilio reconnects elsewhere."""
    import signal

    env = {"REDIS_URL": redis_url, "REDIS_PREFIX": redis_prefix, **model_settings(fake_llm),
           "WEB_CONCURRENCY": "2", "TWILIO_AUTH_TOKEN": TOKEN,
           "TWILIO_MODE": "relay"}
    old, new = Gunicorn(env), Gunicorn(env)
    old.env["PUBLIC_URL"], new.env["PUBLIC_URL"] = old.url, new.url
    old.start(tmp_path / "old.log")
    new.start(tmp_path / "new.log")
    sid = new_sid()
    try:
        url = voice_over_http(old.url, sid)
        ws = connect(url)
        setup(ws, sid)
        prompt(ws, "first mk1")
        assert reply(ws)[0] == "Heard mk1."
        stopped = time.monotonic()
        old.process.send_signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed):
            while True:
                ws.receive(timeout=10)
        handed_back = time.monotonic() - stopped
        old.process.wait(30)
        # Twilio reconnects (applicationReconnect) with the same URL, here reaching another instance: the
        # ticket was given back as the socket was handed back.
        again = connect(on_host(url, new.url))
        setup(again, sid)
        prompt(again, "second mk2")
        assert reply(again)[0] == "Heard mk1 mk2."  # the same conversation, from its session in Redis
        hang_up(again)
    finally:
        old.stop()
        new.stop()
    assert "the caller hung up" not in old.log() and "relay handed back" in old.log()
    print(f"\nDRILL relay-deploy: SIGTERM closed the live socket {handed_back:.2f}s later without ending the call; "
          f"another instance took the reconnect and the conversation went on")


@needs_nginx
def test_the_shipped_nginx_site_passes_the_relay_upgrade_through(fake_llm, redis_url, redis_prefix, tmp_path):
    """Behind voicebot's nginx site (the VM deploy), the socket's upgrade and its tokens pass unbuffered."""
    proc = Gunicorn({"REDIS_URL": redis_url, "REDIS_PREFIX": redis_prefix, **model_settings(fake_llm),
                     "WEB_CONCURRENCY": "2", "TWILIO_AUTH_TOKEN": TOKEN,
                     "TWILIO_MODE": "relay"})
    nginx = Nginx(tmp_path, [proc.port])
    proc.env["PUBLIC_URL"] = nginx.url  # Twilio signs the public URL: nginx's here, as PUBLIC_URL says
    proc.start(tmp_path / "gunicorn.log")
    nginx.start()
    try:
        sid = new_sid()
        ws = connect(voice_over_http(nginx.url, sid))
        setup(ws, sid)
        prompt(ws, "through nginx mk1")
        assert reply(ws)[0] == "Heard mk1."
        hang_up(ws)
    finally:
        nginx.stop()
        proc.stop()


def test_a_socket_sending_what_is_not_twilios_is_closed_with_one_warning(relay, caplog):
    app, public = relay()
    ws, _ = start(app, public, new_sid())
    try:
        for n in range(1_000):
            ws.send("junk" if n % 2 else json.dumps({"type": "no-such-thing"}))
    except (ConnectionClosed, OSError):  # closed by the server meanwhile
        pass
    with pytest.raises(ConnectionClosed):
        ws.receive(timeout=10)
    assert ws.close_reason == 1008
    assert len([r for r in caplog.records if "relay message" in r.getMessage()]) == 1
    wait_for(lambda: records_of(app), timeout=10, what="the call's record: a socket closed is a call ended")

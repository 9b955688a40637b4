"""The model ends and hands off calls; every call leaves one complete record."""

from __future__ import annotations

import time

import pytest

from voicebot import create_app
from voicebot.conversation import Conversation, ConversationSettings
from voicebot_testing.fake_llm import MARKER
from voicebot.llm import OfflineResponder, Reply, ToolUse
from voicebot.records.outbox import MemoryOutbox
from voicebot import background
from voicebot.stores import MemoryStore
from voicebot_testing.fake_voipbin import transcript_event_data
from voicebot.runtime import runtime_of

from .conftest import app_config
from .support import RecordReceiver, wait_for
from .test_voipbin import FETCH_TOKEN, OUR_NUMBER, SECRET, post_event

HUMANS = "+15550009999"


def turn(client, call_id, text):
    response = client.post("/webhook/transcript", json={"call_id": call_id, "transcript": text})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def records_of(app) -> list[dict]:
    return list(runtime_of(app).records.export(0))


# -- the model can act ---------------------------------------------------------------------------

def test_the_tools_offered_follow_the_settings(make_app, fake_llm):
    turn(make_app().test_client(), "c", "mk1")
    assert [t["name"] for t in fake_llm.requests[-1]["tools"]] == ["end_call"]
    assert "end_call" in fake_llm.requests[-1]["system"][0]["text"]
    turn(make_app(TRANSFER_NUMBER=HUMANS).test_client(), "c", "mk1")
    assert [t["name"] for t in fake_llm.requests[-1]["tools"]] == ["end_call", "transfer_call"]


def test_end_call_on_the_articles_contract(make_app):
    app = make_app()
    client = app.test_client()
    assert turn(client, "c", "mk1") == {"response": "Heard mk1."}
    assert turn(client, "c", "thanks, goodbye mk2") == {"response": "Heard mk1 mk2.", "action": {"type": "hangup"}}
    (record,) = records_of(app)
    assert record["end_reason"] == "bot_ended" and record["actions"][0]["type"] == "hangup"
    assert turn(client, "c", "mk3") == {"response": "Heard mk3."}  # the same id starts afresh


def test_transfer_on_the_articles_contract(make_app):
    app = make_app(TRANSFER_NUMBER=HUMANS)
    reply = turn(app.test_client(), "c", "a human please mk1")
    assert reply == {"response": "Heard mk1.", "action": {"type": "transfer", "to": HUMANS}}
    (record,) = records_of(app)
    assert record["end_reason"] == "transferred" and record["transferred_to"] == HUMANS


def test_without_a_transfer_number_asking_for_a_person_just_talks(make_app):
    assert turn(make_app().test_client(), "c", "a human please mk1") == {"response": "Heard mk1."}


def test_a_tool_with_no_words_gets_the_configured_line(make_app, monkeypatch):
    app = make_app(GOODBYE_LINE="Bye now.")
    monkeypatch.setattr(runtime_of(app).conversations["article"].llm, "reply",
                        lambda *a, **k: Reply("", [ToolUse("toolu_1", "end_call", {})]))
    assert turn(app.test_client(), "c", "mk1") == {"response": "Bye now.", "action": {"type": "hangup"}}


def test_tool_use_is_always_answered_in_the_history_the_api_sees(make_app, fake_llm, monkeypatch):
    """The strict fake refuses a tool_use without its tool_result, as the real API does."""
    app = make_app(MAX_HISTORY_TURNS=2)
    llm = runtime_of(app).conversations["article"].llm
    real = llm.reply
    monkeypatch.setattr(llm, "reply", lambda *a, **k: Reply("Let me look.", [ToolUse("toolu_1", "weather", {})]))
    client = app.test_client()
    assert turn(client, "c", "mk1") == {"response": "Let me look."}  # a tool not offered: answered, not done
    monkeypatch.setattr(llm, "reply", real)
    assert turn(client, "c", "mk2")["response"] == "Heard mk1 mk2."
    messages = fake_llm.requests[-1]["messages"]
    assert messages[-2]["content"][-1]["type"] == "tool_use"
    assert [b["type"] for b in messages[-1]["content"]] == ["tool_result", "text"]
    assert messages[-1]["content"][0]["tool_use_id"] == "toolu_1"
    assert turn(client, "c", "mk3")["response"] == "Heard mk1 mk2 mk3."
    # Trimmed to 2 turns, the tool_use left behind takes its tool_result with it: still a valid history.
    assert turn(client, "c", "mk4")["response"] == "Heard mk2 mk3 mk4."
    assert fake_llm.requests[-1]["messages"][0] == {"role": "user", "content": [{"type": "text", "text": "mk2"}]}


@pytest.mark.parametrize("words, action", [("ok bye then", {"type": "hangup"}),
                                           ("can I talk to a person", {"type": "transfer", "to": HUMANS})])
def test_the_offline_responder_uses_the_tools_too(words, action):
    app = create_app({"ANTHROPIC_API_KEY": "", "REDIS_URL": "", "TRANSFER_NUMBER": HUMANS})
    assert isinstance(runtime_of(app).conversations["article"].llm.inner, OfflineResponder)
    assert turn(app.test_client(), "c", words)["action"] == action


# -- every call leaves one complete record ----------------------------------------------------------

def test_a_record_holds_the_whole_transcript_not_the_models_window(make_app):
    app = make_app(MAX_HISTORY_TURNS=2, FALLBACK_REPLY="Sorry?")
    client = app.test_client()
    client.post("/webhook/call-started", json={"call_id": "c", "caller_num": "+15551230000"})
    for n in range(5):
        turn(client, "c", f"mk{n}")
    client.post("/webhook/transcript", json={"type": "call.ended", "call_id": "c"})
    (record,) = records_of(app)
    assert record["platform"] == "article" and record["call_id"] == "c" and record["caller"] == "+15551230000"
    assert record["end_reason"] == "ended" and record["turns"] == 5 and record["fallbacks"] == 0
    spoken = [(line["speaker"], line["text"]) for line in record["transcript"]]
    assert spoken[0] == ("bot", "Hello! How can I help you today?")
    assert [text for who, text in spoken if who == "caller"] == [f"mk{n}" for n in range(5)]
    assert len(spoken) == 11 and all(line["at"].endswith("Z") for line in record["transcript"])
    assert record["duration_seconds"] >= 0 and record["id"].startswith("rec_")


def test_fallbacks_are_counted_in_the_record(make_app, fake_llm):
    app = make_app()
    client = app.test_client()
    fake_llm.fail_rate = 1.0
    turn(client, "c", "mk1")
    fake_llm.fail_rate = 0.0
    client.post("/webhook/transcript", json={"type": "call.ended", "call_id": "c"})
    (record,) = records_of(app)
    assert record["fallbacks"] == 1 and record["transcript"][-1]["fallback"] is True


def test_a_call_that_just_expires_still_leaves_its_record(make_app):
    app = make_app(SESSION_TTL_SECONDS=1)
    client = app.test_client()
    turn(client, "c", "mk1")
    threads = background.start(app)
    try:
        record = wait_for(lambda: next(iter(records_of(app)), None), what="the expired call's record")
    finally:
        background.stop(app)
    assert record["end_reason"] == "expired" and [ln["text"] for ln in record["transcript"]] == ["mk1", "Heard mk1."]
    assert threads[0].name == "call-reaper"
    assert turn(client, "c", "mk2") == {"response": "Heard mk2."}  # gone: a new call


def counted(app, event: str) -> float:
    """A record counter's value (counters are per process, shared by the tests: compare differences)."""
    import re

    text = app.test_client().get("/metrics").get_data(as_text=True)
    found = re.search(r'^voicebot_call_records_total\{event="%s"\} ([0-9.]+)$' % event, text, re.M)
    return float(found.group(1)) if found else 0.0


def test_records_reach_the_receiver_signed_once_each_after_it_comes_back(make_app):
    receiver = RecordReceiver("rec-secret")
    receiver.down = True
    app = make_app(CALL_REPORT_URL=receiver.url, CALL_REPORT_SECRET="rec-secret")
    client = app.test_client()
    made, delivered = counted(app, "made"), counted(app, "delivered")
    for n in range(3):
        turn(client, f"c{n}", f"mk{n}")
        client.post("/webhook/transcript", json={"type": "call.ended", "call_id": f"c{n}"})
    background.start(app)
    try:
        wait_for(lambda: receiver.refused >= 1, what="a delivery refused while the receiver is down")
        receiver.down = False
        wait_for(lambda: len(receiver.by_id()) == 3, timeout=20, what="every record delivered")
        wait_for(lambda: runtime_of(app).records.oldest_undelivered() is None, what="the outbox to empty")
    finally:
        background.stop(app)
        receiver.stop()
    assert receiver.bad_signatures == 0
    assert sorted(r["call_id"] for r in receiver.by_id().values()) == ["c0", "c1", "c2"]
    assert counted(app, "made") - made == 3 and counted(app, "delivered") - delivered == 3
    assert counted(app, "retried") > 0  # the receiver was down at first
    metrics = app.test_client().get("/metrics").get_data(as_text=True)
    assert "voicebot_call_records_oldest_undelivered_seconds 0.0" in metrics


def test_a_record_made_twice_has_one_id():
    """A crash between keeping a record and forgetting the call makes it again: the receiver dedupes by id."""
    outbox = MemoryOutbox(retention=3600, deliver=False)
    settings = ConversationSettings("s", "Hi", "Sorry", 20, 300, 2.0, 3.0)
    conversation = Conversation(MemoryStore(60), OfflineResponder(), settings, namespace="article", records=outbox)
    conversation.take_turn("c", "hello")
    session = conversation.store.peek("article:c")
    conversation.expired(conversation.call_id_of("article:c"), session, [])
    conversation.end_call("c")
    first, second = outbox.export(0)
    assert first["id"] == second["id"]


def test_record_settings_are_checked(fake_llm):
    from voicebot.exceptions import ConfigError

    with pytest.raises(ConfigError, match="CALL_REPORT_SECRET"):
        create_app(app_config(fake_llm, CALL_REPORT_URL="https://records.example.com/in"))


# -- VoIPBin: hang up after the goodbye, hand off through the fetch loop ----------------------------


def voipbin_app(make_app, voipbin, **overrides):
    return make_app(**{"VOIPBIN_WEBHOOK_SECRET": SECRET, "VOIPBIN_ACCESS_KEY": voipbin.access_key,
                       "VOIPBIN_API_URL": voipbin.api_url, "VOIPBIN_NUMBERS": (OUR_NUMBER,),
                       "VOIPBIN_FETCH_TOKEN": FETCH_TOKEN, "VOIPBIN_TIMEOUT_SECONDS": 1.0, **overrides})


def test_voipbin_end_call_hangs_up_once_the_goodbye_was_heard(make_app, voipbin, fake_llm):
    app = voipbin_app(make_app, voipbin)
    client = app.test_client()
    call_id = voipbin.answer_call()
    post_event(client, "call_progressing", voipbin.calls[call_id])
    transcribe_id = voipbin.transcribe_of(call_id)
    runtime_of(app).platforms["voipbin"].speech.clock = time.time
    started = time.monotonic()
    said = post_event(client, "transcript_created", transcript_event_data(transcribe_id, "goodbye mk1"))
    assert said.get_json() == {"status": "said"}
    assert voipbin.said[call_id][-1] == "Heard mk1."
    assert voipbin.hung_up_by_api == [call_id]
    # "Heard mk1." takes about 0.7 s to say at 15 characters a second: not cut off.
    assert time.monotonic() - started >= len("Heard mk1.") / 15
    post_event(client, "call_hangup", voipbin.calls[call_id])
    (record,) = records_of(app)
    assert record["end_reason"] == "bot_ended" and record["hangup_by"] == "local"
    spoken = [line["text"] for line in record["transcript"]]
    assert spoken == ["Hello! How can I help you today?", "goodbye mk1", "Heard mk1."]
    assert fake_llm.requests[-1]["tools"][0]["name"] == "end_call"


def test_voipbin_transfer_connects_through_the_fetch_loop(make_app, voipbin, fake_llm):
    app = voipbin_app(make_app, voipbin, TRANSFER_NUMBER=HUMANS, VOIPBIN_NUMBERS=())
    client = app.test_client()
    fetch = f"/webhook/voipbin/fetch?token={FETCH_TOKEN}"
    call_id = "call-x"
    assert client.post(fetch, json={"activeflow_id": "af", "reference_id": call_id}).status_code == 200
    voipbin.answer_call(call_id)
    post_event(client, "call_progressing", voipbin.calls[call_id])
    transcribe_id = voipbin.transcribe_of(call_id)
    said = post_event(client, "transcript_created", transcript_event_data(transcribe_id, "a human please mk1"))
    assert said.get_json() == {"status": "said"}
    assert {t["name"] for t in fake_llm.requests[-1]["tools"]} == {"end_call", "transfer_call"}
    # The bot stops listening and speaking on the call.
    assert voipbin.live("transcribes", call_id) == [] and voipbin.live("speakings", call_id) == []
    actions = client.post(fetch, json={"activeflow_id": "af", "reference_id": call_id}).get_json()
    assert actions == [{"type": "connect", "option": {"source": {"type": "tel", "target": OUR_NUMBER},
                                                      "destinations": [{"type": "tel", "target": HUMANS}]}}]
    (record,) = records_of(app)
    assert record["end_reason"] == "transferred" and record["transferred_to"] == HUMANS
    # The human's leg, and the call's later hang-up, are not the bot's.
    human_leg = voipbin.answer_call(direction="outgoing", callee=HUMANS)
    assert post_event(client, "call_progressing", voipbin.calls[human_leg]).get_json() == {"status": "ignored"}
    assert post_event(client, "call_hangup", voipbin.hang_up(call_id)).status_code == 200
    assert len(records_of(app)) == 1


def test_voipbin_calls_not_handed_over_by_fetch_are_not_offered_a_transfer(make_app, voipbin, fake_llm):
    app = voipbin_app(make_app, voipbin, TRANSFER_NUMBER=HUMANS)
    client = app.test_client()
    call_id = voipbin.answer_call()
    post_event(client, "call_progressing", voipbin.calls[call_id])
    post_event(client, "transcript_created", transcript_event_data(voipbin.transcribe_of(call_id), "a human mk1"))
    assert [t["name"] for t in fake_llm.requests[-1]["tools"]] == ["end_call"]
    assert MARKER.findall(voipbin.said[call_id][-1]) == ["mk1"]


def test_calls_export_writes_the_kept_records_as_json_lines(
        fake_llm, redis_url, redis_prefix, monkeypatch, capsys, tmp_path):
    import json

    from voicebot.cli import main

    app = create_app(app_config(fake_llm, REDIS_URL=redis_url, REDIS_PREFIX=redis_prefix))
    client = app.test_client()
    for call_id in ("e1", "e2"):
        turn(client, call_id, "mk1")
        client.post("/webhook/transcript", json={"type": "call.ended", "call_id": call_id})
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("REDIS_PREFIX", redis_prefix)
    assert main(["calls", "export", "--since", "1h", "--output", str(tmp_path / "calls.jsonl")]) == 0
    lines = (tmp_path / "calls.jsonl").read_text().splitlines()
    assert [json.loads(line)["call_id"] for line in lines] == ["e1", "e2"]
    assert main(["calls", "export", "--since", "2099-01-01"]) == 0
    assert capsys.readouterr().out == ""
    runtime_of(app).conversations["article"].store.close()
    runtime_of(app).records.close()

"""The VoIPBin contract on a real account: signed events in, speech out through a strict fake of its API.

Tests named ``test_finding_N_...`` each reproduce one numbered finding of the
issue about running a real VoIPBin account, against a fake that answers the
way VoIPBin's code does.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time

import pytest

from voicebot import create_app
from voicebot_testing.fake_voipbin import (FlowRunner, call_event_data, go_json, speech_event_data,
                                           transcribe_event_data, transcript_event_data)
from voicebot.exceptions import ConfigError
from voicebot.voipbin.signing import HEADER, sign
from voicebot.runtime import runtime_of

from .conftest import FETCH_TOKEN, OUR_NUMBER, app_config  # noqa: F401 - other tests take them from here

GREETING = "Hello! How can I help you today?"
SECRET = "test-webhook-secret-0123456789ab"


@pytest.fixture
def client(make_voipbin_app):
    return make_voipbin_app().test_client()


def post_event(client, event_type, data, secret=SECRET, signature=None, method="POST"):
    body = go_json({"type": event_type, "data": data})
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers[HEADER] = signature
    elif secret is not None:
        headers[HEADER] = sign(body, secret)
    return client.open("/webhook/voipbin", method=method, data=body, headers=headers)


def deliver(client, event_type, data):
    """VoIPBin's retry loop, in process: up to 3 attempts, again only after a 5xx."""
    for _ in range(3):
        response = post_event(client, event_type, data)
        if response.status_code < 500:
            break
    return response


def answer(client, voipbin, call_id=None, **call):
    call_id = voipbin.answer_call(call_id, **call)
    response = post_event(client, "call_progressing", voipbin.calls[call_id])
    assert response.status_code == 200, response.get_json()
    return call_id


def speak(client, voipbin, call_id, message, direction="in", transcript_id=None):
    data = transcript_event_data(voipbin.transcribe_of(call_id), message, direction, transcript_id)
    return post_event(client, "transcript_created", data)


def one_live(voipbin, call_id):
    """Exactly one progressing transcribe and one active speaking session on the call."""
    return len(voipbin.live("transcribes", call_id)) == 1 and len(voipbin.live("speakings", call_id)) == 1


# -- the conversation --------------------------------------------------------------------

def test_a_whole_call(client, voipbin):
    call_id = answer(client, voipbin)
    transcribe_id = voipbin.transcribe_of(call_id)
    assert voipbin.transcribes[transcribe_id]["direction"] == "in"
    assert voipbin.said[call_id] == [GREETING]

    assert speak(client, voipbin, call_id, "I want to check mk1").get_json() == {"status": "said"}
    assert speak(client, voipbin, call_id, "order mk2").get_json() == {"status": "said"}
    assert voipbin.said[call_id] == [GREETING, "Heard mk1.", "Heard mk1 mk2."]

    hangup = post_event(client, "call_hangup", voipbin.hang_up(call_id))
    assert hangup.get_json() == {"status": "ended"}
    assert voipbin.transcribes[transcribe_id]["status"] == "done"
    assert all(s["status"] == "stopped" for s in voipbin.speakings.values())


def test_the_bots_own_speech_heard_back_gets_no_reply(client, voipbin):
    call_id = answer(client, voipbin)
    assert speak(client, voipbin, call_id, "mk1", direction="out").get_json() == {"status": "ignored"}
    assert voipbin.said[call_id] == [GREETING]


def test_a_redelivered_transcript_is_said_once(client, voipbin):
    call_id = answer(client, voipbin)
    data = transcript_event_data(voipbin.transcribe_of(call_id), "mk1")
    assert post_event(client, "transcript_created", data).get_json() == {"status": "said"}
    assert post_event(client, "transcript_created", data).get_json() == {"status": "duplicate"}
    assert voipbin.said[call_id] == [GREETING, "Heard mk1."]
    speak(client, voipbin, call_id, "mk2")
    assert voipbin.said[call_id][-1] == "Heard mk1 mk2."  # appended once, too


def test_an_old_event_replayed_after_many_newer_ones_is_still_a_duplicate(client, voipbin):
    call_id = answer(client, voipbin)
    first = transcript_event_data(voipbin.transcribe_of(call_id), "mk0")
    post_event(client, "transcript_created", first)
    for n in range(1, 40):
        speak(client, voipbin, call_id, f"mk{n}")
    assert post_event(client, "transcript_created", first).get_json() == {"status": "duplicate"}
    assert len(voipbin.said[call_id]) == 41


def test_concurrent_deliveries_of_one_transcript_speak_once(make_voipbin_app, voipbin, fake_llm):
    app = make_voipbin_app()
    call_id = answer(app.test_client(), voipbin)
    data = transcript_event_data(voipbin.transcribe_of(call_id), "mk1")
    fake_llm.latency = 0.05
    statuses = []
    barrier = threading.Barrier(4)

    def deliver_once():
        barrier.wait()
        statuses.append(post_event(app.test_client(), "transcript_created", data).get_json()["status"])

    threads = [threading.Thread(target=deliver_once) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == ["duplicate"] * 3 + ["said"]
    assert voipbin.said[call_id] == [GREETING, "Heard mk1."]


def test_a_redelivered_call_progressing_sets_up_once(client, voipbin):
    call_id = answer(client, voipbin)
    answer(client, voipbin, call_id)
    assert len(voipbin.transcribes) == 1 and len(voipbin.speakings) == 1
    assert voipbin.said[call_id] == [GREETING]


def test_the_greeting_is_said_after_one_rest_round_trip_and_listening_starts_after_it(client, voipbin):
    """The caller hears the greeting once the speaking session exists; the transcribe is started after it."""
    greeted_before = greetings_counted(client)
    call_id = answer(client, voipbin)
    speaking_id = voipbin.live("speakings", call_id)[0]["id"]
    assert voipbin.requests == [("POST", "/speakings"), ("POST", f"/speakings/{speaking_id}/say"),
                                ("POST", "/transcribes")]
    assert one_live(voipbin, call_id) and voipbin.said[call_id] == [GREETING]
    assert greetings_counted(client) == greeted_before + 1


def greetings_counted(client):
    found = re.search(r'voicebot_time_to_greeting_seconds_count\{platform="voipbin"\} (\S+)',
                      client.get("/metrics").get_data(as_text=True))
    return float(found.group(1)) if found else 0.0


def test_a_transcribe_that_fails_after_the_greeting_is_started_by_the_redelivery_alone(client, voipbin):
    voipbin.fail_next["transcribes"] = 1
    call_id = voipbin.answer_call()
    assert deliver(client, "call_progressing", voipbin.calls[call_id]).status_code == 200
    assert one_live(voipbin, call_id)
    assert voipbin.said[call_id] == [GREETING]  # greeted once, by the first attempt
    assert speak(client, voipbin, call_id, "mk1").get_json() == {"status": "said"}


def test_hangup_before_progressing_leaves_nothing_running(client, voipbin):
    call_id = voipbin.answer_call()
    assert post_event(client, "call_hangup", voipbin.hang_up(call_id)).status_code == 200
    late = post_event(client, "call_progressing", call_event_data(call_id, "progressing"))
    assert late.get_json() == {"status": "ignored"}
    assert voipbin.transcribes == {} and voipbin.speakings == {} and voipbin.said == {}


def test_a_transcript_after_hangup_gets_no_reply(client, voipbin):
    call_id = answer(client, voipbin)
    transcribe_id = voipbin.transcribe_of(call_id)
    post_event(client, "call_hangup", voipbin.hang_up(call_id))
    late = post_event(client, "transcript_created", transcript_event_data(transcribe_id, "mk1"))
    assert late.get_json() == {"status": "ignored"}
    assert voipbin.said[call_id] == [GREETING]


def test_hangup_is_logged_with_who_and_why(client, voipbin, caplog):
    call_id = answer(client, voipbin)
    with caplog.at_level(logging.INFO, logger="voicebot"):
        post_event(client, "call_hangup", voipbin.hang_up(call_id, by="remote"))
    assert f"call hung up call_id={call_id} hangup_by=remote hangup_reason=normal" in caplog.text


def test_language_provider_and_voice_are_configurable(make_voipbin_app, voipbin):
    client = make_voipbin_app(VOIPBIN_LANGUAGE="de-DE", VOIPBIN_TTS_PROVIDER="elevenlabs",
                              VOIPBIN_VOICE_ID="voice-7").test_client()
    call_id = answer(client, voipbin)
    (speaking,) = voipbin.speakings.values()
    assert (speaking["reference_id"], speaking["language"], speaking["provider"], speaking["voice_id"],
            speaking["direction"]) == (call_id, "de-DE", "elevenlabs", "voice-7", "out")
    assert voipbin.transcribes[voipbin.transcribe_of(call_id)]["language"] == "de-DE"


# -- signatures and the endpoint's switches -----------------------------------------------

@pytest.mark.parametrize("signature", [None, "", "sha256=", "md5=abc", "sha256=" + "0" * 64, "garbage"])
def test_unsigned_or_forged_events_are_refused_before_parsing(client, voipbin, signature):
    call_id = voipbin.answer_call()
    body = b'{"type": "call_progressing", "data": {"id": "' + call_id.encode() + b'"}'  # not even JSON
    headers = {} if signature is None else {HEADER: signature}
    response = client.post("/webhook/voipbin", data=body, headers=headers)
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_signature"
    assert voipbin.transcribes == {}


def test_an_event_signed_with_another_secret_is_refused(client, voipbin):
    call_id = voipbin.answer_call()
    response = post_event(client, "call_progressing", voipbin.calls[call_id], secret="someone-elses-secret")
    assert response.status_code == 401
    assert voipbin.transcribes == {}


def test_without_a_secret_the_endpoint_is_off(make_voipbin_app, voipbin):
    client = make_voipbin_app(VOIPBIN_WEBHOOK_SECRET="").test_client()
    response = post_event(client, "call_progressing", call_event_data(voipbin.answer_call(), "progressing"))
    assert response.status_code == 404
    assert "VOIPBIN_WEBHOOK_SECRET" in response.get_json()["message"]


def test_unsigned_events_when_explicitly_allowed(make_voipbin_app, voipbin, caplog):
    with caplog.at_level(logging.WARNING, logger="voicebot"):
        client = make_voipbin_app(VOIPBIN_WEBHOOK_SECRET="", VOIPBIN_ALLOW_UNSIGNED=True).test_client()
    assert "UNSIGNED" in caplog.text
    call_id = voipbin.answer_call()
    response = post_event(client, "call_progressing", voipbin.calls[call_id], secret=None)
    assert response.status_code == 200
    assert voipbin.said[call_id] == [GREETING]


def test_without_an_access_key_the_endpoint_is_off(make_voipbin_app):
    client = make_voipbin_app(VOIPBIN_ACCESS_KEY="").test_client()
    response = post_event(client, "call_progressing", call_event_data("c", "progressing"))
    assert response.status_code == 404
    assert "VOIPBIN_ACCESS_KEY" in response.get_json()["message"]


@pytest.mark.parametrize("event_type", ["call_created", "call_ringing", "call_updated", "transcribe_done",
                                        "transcribe_speech_interim", "something_new"])
def test_other_events_are_acknowledged_and_ignored(client, voipbin, event_type):
    response = post_event(client, event_type, {"id": "x", "status": "whatever"})
    assert response.status_code == 200 and response.get_json() == {"status": "ignored"}


@pytest.mark.parametrize("body, words", [
    ({"data": {}}, "'type' is missing"),
    ({"type": "call_progressing"}, "'data' must be a JSON object"),
    ({"type": "call_progressing", "data": []}, "'data' must be a JSON object"),
    ({"type": "call_progressing", "data": {"status": "progressing"}}, "'id' is missing"),
    ({"type": "transcript_created", "data": {"direction": "in", "transcribe_id": "t", "message": "hi"}},
     "'id' is missing"),
    ({"type": "transcript_created", "data": {"id": "e", "direction": "in", "message": "hi"}},
     "'transcribe_id' is missing"),
])
def test_malformed_events_get_a_400(client, body, words):
    raw = json.dumps(body).encode()
    response = client.post("/webhook/voipbin", data=raw, headers={HEADER: sign(raw, SECRET)})
    assert response.status_code == 400
    assert words in response.get_json()["message"]


def test_the_budget_must_fit_in_voipbins_wait(fake_llm, voipbin):
    with pytest.raises(ConfigError, match="LLM_TIMEOUT_SECONDS .* VOIPBIN_TIMEOUT_SECONDS"):
        create_app(app_config(fake_llm, VOIPBIN_WEBHOOK_SECRET=SECRET, VOIPBIN_ACCESS_KEY="k",
                              LLM_TIMEOUT_SECONDS=9.0, VOIPBIN_TIMEOUT_SECONDS=4.0))


# -- barge-in ------------------------------------------------------------------------------

def test_barge_in_flushes_while_the_bot_speaks_once_per_event(client, voipbin):
    call_id = answer(client, voipbin)
    speak(client, voipbin, call_id, "mk1")
    event = speech_event_data(voipbin.transcribe_of(call_id))
    assert post_event(client, "transcribe_speech_started", event).get_json() == {"status": "flushed"}
    assert post_event(client, "transcribe_speech_started", event).get_json() == {"status": "duplicate"}
    assert len(voipbin.flushed) == 1


def test_no_flush_once_the_bot_has_finished(make_voipbin_app, voipbin):
    app = make_voipbin_app()
    client = app.test_client()
    call_id = answer(client, voipbin)
    runtime_of(app).platforms["voipbin"].speech.clock = lambda: 4e9  # long after the greeting ended
    started = post_event(client, "transcribe_speech_started", speech_event_data(voipbin.transcribe_of(call_id)))
    assert started.get_json() == {"status": "not_speaking"}
    assert voipbin.flushed == []


def test_barge_in_can_be_turned_off(make_voipbin_app, voipbin):
    client = make_voipbin_app(VOIPBIN_BARGE_IN=False).test_client()
    call_id = answer(client, voipbin)
    started = post_event(client, "transcribe_speech_started", speech_event_data(voipbin.transcribe_of(call_id)))
    assert started.get_json() == {"status": "ignored"}
    assert voipbin.flushed == []


# -- the findings, one by one ---------------------------------------------------------------

@pytest.mark.parametrize("call", [
    {"direction": "outgoing", "callee": "+15550009999"},  # the human's leg of a connect
    {"direction": "outgoing", "callee": OUR_NUMBER},  # a campaign call from our number
    {"direction": "incoming", "callee": "+15550001234"},  # another number of the account
    {"direction": "incoming", "callee": "conference@voipbin.net"},
])
def test_finding_1_calls_that_are_not_the_bots_are_left_alone(client, voipbin, caplog, call):
    call_id = voipbin.answer_call(**call)
    with caplog.at_level(logging.DEBUG, logger="voicebot"):
        progressing = post_event(client, "call_progressing", voipbin.calls[call_id])
        hangup = post_event(client, "call_hangup", voipbin.hang_up(call_id))
    assert progressing.status_code == 200 and progressing.get_json() == {"status": "ignored"}
    assert hangup.status_code == 200 and hangup.get_json() == {"status": "ignored"}
    assert voipbin.requests == [] and voipbin.said == {}
    assert [r for r in caplog.records if r.levelno > logging.DEBUG] == []


def test_finding_1_numbers_match_however_they_are_written(make_voipbin_app, voipbin):
    client = make_voipbin_app(VOIPBIN_NUMBERS=("+1 (555) 987-0000",)).test_client()
    call_id = answer(client, voipbin)
    assert voipbin.said[call_id] == [GREETING]


def test_finding_2_transcriptions_of_other_calls_are_left_alone(client, voipbin, caplog):
    ours = answer(client, voipbin)
    other = voipbin.answer_call(direction="outgoing", callee="+15550009999")
    transcribe = voipbin.handle_api("POST", "/transcribes", {}, {
        "reference_type": "call", "reference_id": other, "language": "en-US", "direction": "both"})[1]
    voipbin.requests.clear()
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="voicebot"):
        created = post_event(client, "transcribe_created", transcribe_event_data(transcribe))
        said = post_event(client, "transcript_created", transcript_event_data(transcribe["id"], "mk1"))
    assert created.get_json() == {"status": "ignored"} and said.get_json() == {"status": "ignored"}
    assert voipbin.requests == [] and other not in voipbin.said and voipbin.said[ours] == [GREETING]
    assert [r for r in caplog.records if r.levelno > logging.DEBUG] == []


def test_finding_3_a_call_handed_over_by_fetch_stays_up(make_voipbin_app, voipbin, fake_llm):
    """VoIPBin hangs up a call whose flow runs out of actions: the fetch loop never lets it."""
    app = make_voipbin_app(VOIPBIN_NUMBERS=())
    client = app.test_client()
    flow = [{"type": "fetch", "option": {"event_url": f"http://bot/webhook/voipbin/fetch?token={FETCH_TOKEN}",
                                         "event_method": "POST"}}]
    call_id = "call-by-fetch"
    said_during = []

    def on_step(action):
        if action["type"] == "sleep" and voipbin.transcribe_of(call_id):
            turn = len(said_during)
            said_during.append(speak(client, voipbin, call_id, f"mk{turn}").get_json()["status"])

    runner = FlowRunner(voipbin, "http://bot/webhook/voipbin", flow, max_steps=40, on_step=on_step)
    runner.voipbin.fetch = lambda url, cid, **kw: _flask_fetch(client, url, cid)
    runner.voipbin.deliver = lambda url, event_type, data, **kw: post_event(client, event_type, data)
    assert runner.run(call_id) == "still up after max_steps"
    assert runner.ran[:4] == ["fetch", "answer", "sleep", "fetch"]
    assert voipbin.calls[call_id]["status"] == "progressing"
    assert voipbin.said[call_id][0] == GREETING  # in the speaking session's voice, interruptible
    assert said_during and set(said_during) == {"said"}
    assert one_live(voipbin, call_id)


def _flask_fetch(client, url, call_id):
    path = url.split("://", 1)[1].split("/", 1)[1]
    response = client.post("/" + path, data=go_json({"activeflow_id": "af-1", "reference_id": call_id}),
                           headers={"Content-Type": "application/json; charset=utf-8"})

    class Answer:
        status_code = response.status_code

        @staticmethod
        def json():
            return response.get_json()
    return Answer()


def test_finding_3_the_fetch_loop_answers_first_then_sleeps_and_fetches_again(client, voipbin):
    url = f"/webhook/voipbin/fetch?token={FETCH_TOKEN}"
    first = client.post(url, json={"activeflow_id": "af-1", "reference_id": "call-f"},
                        base_url="https://bot.example.com")
    assert first.status_code == 200
    loop = [{"type": "sleep", "option": {"duration": 10_000}},
            {"type": "fetch", "option": {"event_url": f"https://bot.example.com{url}", "event_method": "POST"}}]
    assert first.get_json() == [{"type": "answer"}, *loop]
    again = client.post(url, json={"activeflow_id": "af-1", "reference_id": "call-f"},
                        base_url="http://127.0.0.1:8000", headers={"X-Forwarded-Proto": "https"})
    assert again.get_json() == [{**loop[0]}, {"type": "fetch", "option": {
        "event_url": f"https://127.0.0.1:8000{url}", "event_method": "POST"}}]
    assert voipbin.requests == []  # the fetch itself calls nothing: set-up follows call_progressing


def test_finding_3_actions_queued_for_a_call_go_out_on_its_next_fetch(make_voipbin_app, voipbin):
    app = make_voipbin_app()
    client = app.test_client()
    url = f"/webhook/voipbin/fetch?token={FETCH_TOKEN}"
    client.post(url, json={"activeflow_id": "af", "reference_id": "call-q"})
    bridge = runtime_of(app).platforms["voipbin"]
    assert bridge.queue_actions("call-q", [{"type": "talk", "option": {"text": "hi"}}], wait=1)
    assert client.post(url, json={"activeflow_id": "af", "reference_id": "call-q"}).get_json()[0] == {
        "type": "talk", "option": {"text": "hi"}}
    assert bridge.queue_actions("call-q", [{"type": "hangup"}], wait=1)
    assert client.post(url, json={"activeflow_id": "af", "reference_id": "call-q"}).get_json() == [
        {"type": "hangup"}]  # nothing after it: the bot's part ends
    assert not bridge.queue_actions("unknown-call", [{"type": "hangup"}], wait=1)


def test_finding_3_a_fetch_after_hangup_ends_the_flow(client, voipbin):
    call_id = answer(client, voipbin)
    post_event(client, "call_hangup", voipbin.hang_up(call_id))
    fetched = client.post(f"/webhook/voipbin/fetch?token={FETCH_TOKEN}",
                          json={"activeflow_id": "af", "reference_id": call_id})
    assert fetched.status_code == 200 and fetched.get_json() == []


def test_finding_5_a_transcribe_that_finished_after_the_timeout_is_adopted(client, voipbin):
    """The first POST /transcribes timed out but went through: the retry's 409 adopts it."""
    call_id = voipbin.answer_call()
    voipbin.lose_answer["transcribes"] = 1
    voipbin.fail_next["transcribes"] = 0
    first = post_event(client, "call_progressing", voipbin.calls[call_id])
    assert first.status_code == 200, first.get_json()  # the lost answer was found by listing
    assert voipbin.said[call_id] == [GREETING] and one_live(voipbin, call_id)
    assert speak(client, voipbin, call_id, "mk1").get_json() == {"status": "said"}


def test_finding_5_a_409_on_the_redelivery_adopts_the_existing_transcribe(client, voipbin):
    call_id = voipbin.answer_call()
    existing = voipbin.handle_api("POST", "/transcribes", {}, {
        "reference_type": "call", "reference_id": call_id, "language": "en-US", "direction": "in"})[1]
    response = post_event(client, "call_progressing", voipbin.calls[call_id])
    assert response.status_code == 200 and response.get_json() == {"status": "answered"}
    assert voipbin.transcribe_of(call_id) == existing["id"] and one_live(voipbin, call_id)
    assert speak(client, voipbin, call_id, "mk1").get_json() == {"status": "said"}
    assert voipbin.said[call_id] == [GREETING, "Heard mk1."]


def test_finding_5_a_second_transcribe_on_our_call_is_stopped(client, voipbin):
    call_id = answer(client, voipbin)
    ours = voipbin.transcribe_of(call_id)
    voipbin.transcribes[ours]["language"] = "xx"  # so the fake lets a second one start
    extra = voipbin.handle_api("POST", "/transcribes", {}, {
        "reference_type": "call", "reference_id": call_id, "language": "en-US", "direction": "in"})[1]
    response = post_event(client, "transcribe_created", transcribe_event_data(extra))
    assert response.get_json() == {"status": "stopped_extra"}
    assert voipbin.transcribes[extra["id"]]["status"] == "done"
    assert voipbin.transcribes[ours]["status"] == "progressing"


def test_finding_6_a_speaking_session_whose_answer_was_lost_is_adopted(client, voipbin):
    call_id = voipbin.answer_call()
    voipbin.lose_answer["speakings"] = 1
    response = deliver(client, "call_progressing", voipbin.calls[call_id])
    assert response.status_code == 200
    assert voipbin.said[call_id] == [GREETING] and one_live(voipbin, call_id)


def test_finding_6_a_500_for_a_second_session_adopts_the_first(client, voipbin):
    call_id = voipbin.answer_call()
    existing = voipbin.handle_api("POST", "/speakings", {}, {
        "reference_type": "call", "reference_id": call_id, "language": "en-US", "direction": "out"})[1]
    response = post_event(client, "call_progressing", voipbin.calls[call_id])
    assert response.status_code == 200
    assert [s["id"] for s in voipbin.live("speakings", call_id)] == [existing["id"]]
    assert voipbin.said[call_id] == [GREETING]


def test_finding_7_a_rate_limited_say_waits_and_is_said_once(client, voipbin):
    call_id = answer(client, voipbin)
    voipbin.rate_limit_next["say"] = 1  # Retry-After: 1
    response = speak(client, voipbin, call_id, "mk1")
    assert response.status_code == 200 and response.get_json() == {"status": "said"}
    assert voipbin.said[call_id] == [GREETING, "Heard mk1."]


def test_finding_7_a_long_retry_after_is_left_to_voipbins_redelivery(client, voipbin):
    call_id = answer(client, voipbin)
    voipbin.rate_limit_next["say"], voipbin.retry_after = 1, 30
    data = transcript_event_data(voipbin.transcribe_of(call_id), "mk1")
    refused = post_event(client, "transcript_created", data)
    assert refused.status_code == 503  # VoIPBin sends it again
    assert refused.headers["Retry-After"] == "30"  # when VoIPBin said it would take it
    assert voipbin.said[call_id] == [GREETING]  # not said and then refused: never both
    assert post_event(client, "transcript_created", data).get_json() == {"status": "said"}
    assert voipbin.said[call_id] == [GREETING, "Heard mk1."]


def test_finding_7_rate_limits_during_set_up_are_waited_out(client, voipbin):
    call_id = voipbin.answer_call()
    voipbin.rate_limit_next["transcribes"] = voipbin.rate_limit_next["speakings"] = 1
    response = post_event(client, "call_progressing", voipbin.calls[call_id])
    assert response.status_code == 200
    assert voipbin.said[call_id] == [GREETING] and one_live(voipbin, call_id)


def test_finding_8_a_dead_speaking_session_is_replaced(client, voipbin, caplog):
    call_id = answer(client, voipbin)
    (dead,) = voipbin.live("speakings", call_id)
    voipbin.kill_stream(dead["id"])  # VoIPBin's text-to-speech server restarted
    assert speak(client, voipbin, call_id, "mk1").get_json() == {"status": "said"}
    assert speak(client, voipbin, call_id, "mk2").get_json() == {"status": "said"}
    assert voipbin.said[call_id] == [GREETING, "Heard mk1.", "Heard mk1 mk2."]
    (live,) = voipbin.live("speakings", call_id)
    assert live["id"] != dead["id"] and voipbin.speakings[dead["id"]]["status"] == "stopped"


@pytest.mark.parametrize("query", ["", "?token=", "?token=wrong", f"?token={FETCH_TOKEN}x"])
def test_finding_9_fetch_without_the_token_changes_nothing(client, voipbin, query):
    response = client.post("/webhook/voipbin/fetch" + query, json={"activeflow_id": "a", "reference_id": "c1"})
    assert response.status_code == 401 and response.get_json()["error"] == "invalid_token"
    call_id = voipbin.answer_call()
    # The call was not claimed: its call_progressing is still somebody else's.
    other = post_event(client, "call_progressing", call_event_data(call_id, "progressing", callee="+1555000"))
    assert other.get_json() == {"status": "ignored"}


def test_finding_9_without_a_token_setting_fetch_is_off(make_voipbin_app):
    client = make_voipbin_app(VOIPBIN_FETCH_TOKEN="").test_client()
    response = client.post("/webhook/voipbin/fetch?token=", json={"activeflow_id": "a", "reference_id": "c"})
    assert response.status_code == 404 and "VOIPBIN_FETCH_TOKEN" in response.get_json()["message"]


@pytest.mark.parametrize("body", [{}, {"reference_id": "c"}, {"activeflow_id": "a"},
                                  {"activeflow_id": "a", "reference_id": 5}])
def test_fetch_rejects_bad_input(client, body):
    response = client.post(f"/webhook/voipbin/fetch?token={FETCH_TOKEN}", json=body)
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_event"


def test_finding_10_transcripts_of_unknown_transcriptions_are_acknowledged_quietly(client, voipbin, caplog):
    with caplog.at_level(logging.DEBUG, logger="voicebot"):
        response = post_event(client, "transcript_created", transcript_event_data("not-ours", "mk1"))
    assert response.status_code == 200 and response.get_json() == {"status": "ignored"}
    assert voipbin.said == {} and [r for r in caplog.records if r.levelno > logging.DEBUG] == []


def test_finding_11_a_long_sip_caller_still_gets_the_bot(client, voipbin):
    caller = "a-very-long-sip-user-name-" + "x" * 120 + "@pbx.branch-office.example.com"
    call_id = answer(client, voipbin, caller=caller)
    assert voipbin.said[call_id] == [GREETING]


def test_finding_11_loose_shapes_never_fail_an_event(client, voipbin):
    call_id = voipbin.answer_call()
    data = {"id": call_id, "direction": "incoming", "destination": {"target": OUR_NUMBER},
            "source": {}, "tm_progressing": None, "surprise": {"nested": [1, 2]}}
    assert post_event(client, "call_progressing", data).get_json() == {"status": "answered"}
    transcript = transcript_event_data(voipbin.transcribe_of(call_id), "mk1")
    transcript.update(tm_transcript=None, tm_create=None, extra=True)
    assert post_event(client, "transcript_created", transcript).get_json() == {"status": "said"}
    long = transcript_event_data(voipbin.transcribe_of(call_id), "mk2 " + "word " * 1000)
    assert post_event(client, "transcript_created", long).get_json() == {"status": "said"}  # cut, not refused


@pytest.mark.parametrize("method", ["POST", "PUT", "GET", "DELETE"])
def test_finding_12_every_webhook_method_is_handled_alike(client, voipbin, method):
    call_id = voipbin.answer_call()
    response = post_event(client, "call_progressing", voipbin.calls[call_id], method=method)
    assert response.status_code == 200 and response.get_json() == {"status": "answered"}
    data = transcript_event_data(voipbin.transcribe_of(call_id), "mk1")
    assert post_event(client, "transcript_created", data, method=method).get_json() == {"status": "said"}
    fetched = client.open(f"/webhook/voipbin/fetch?token={FETCH_TOKEN}", method=method,
                          json={"activeflow_id": "a", "reference_id": call_id})
    assert fetched.status_code == 200


def test_finding_13_voipbins_error_envelope_is_read(client, voipbin, caplog):
    call_id = answer(client, voipbin)
    transcribe_id = voipbin.transcribe_of(call_id)
    voipbin.hang_up(call_id)  # VoIPBin refuses speech into a call that is not live
    with caplog.at_level(logging.ERROR, logger="voicebot"):
        response = post_event(client, "transcript_created", transcript_event_data(transcribe_id, "mk1"))
    assert response.status_code == 200 and response.get_json() == {"status": "not_said"}
    assert "reply not said" in caplog.text and "HTTP 400 FAILED_PRECONDITION the call is not live" in caplog.text
    assert "{" not in caplog.text  # not a raw dict


def test_finding_14_a_long_call_keeps_its_transcribe_link(voipbin, fake_llm, redis_url, redis_prefix):
    import redis as redis_lib

    app = create_app(app_config(fake_llm, REDIS_URL=redis_url, REDIS_PREFIX=redis_prefix,
                                VOIPBIN_WEBHOOK_SECRET=SECRET, VOIPBIN_ACCESS_KEY=voipbin.access_key,
                                VOIPBIN_API_URL=voipbin.api_url, VOIPBIN_NUMBERS=(OUR_NUMBER,),
                                VOIPBIN_FETCH_TOKEN=FETCH_TOKEN))
    client = app.test_client()
    call_id = answer(client, voipbin)
    link = f"{redis_prefix}:alias:voipbin:transcribe:{voipbin.transcribe_of(call_id)}"
    session = f"{redis_prefix}:call:{{voipbin:{call_id}}}:session"
    raw = redis_lib.Redis.from_url(redis_url)
    raw.pexpire(link, 2000)  # as if 29 of its 30 minutes had passed
    assert speak(client, voipbin, call_id, "mk1").get_json() == {"status": "said"}
    assert raw.pttl(link) > 1_700_000
    raw.pexpire(link, 2000)
    raw.pexpire(session, 2000)
    client.post(f"/webhook/voipbin/fetch?token={FETCH_TOKEN}", json={"activeflow_id": "a", "reference_id": call_id})
    assert raw.pttl(link) > 1_700_000 and raw.pttl(session) > 1_700_000  # the fetch loop keeps a silent call
    raw.close()
    runtime_of(app).conversations["article"].store.close()


def test_finding_15_a_slow_api_sets_up_once_with_the_lease_renewed(make_voipbin_app, voipbin):
    client = make_voipbin_app(VOIPBIN_TIMEOUT_SECONDS=2.0, LLM_TIMEOUT_SECONDS=0.4,
                              LOCK_LEASE_SECONDS=1.0).test_client()
    voipbin.latency = 0.6  # three requests: longer than the lease without renewals
    call_id = voipbin.answer_call()
    assert post_event(client, "call_progressing", voipbin.calls[call_id]).status_code == 200
    assert voipbin.said[call_id] == [GREETING] and one_live(voipbin, call_id)


def test_finding_15_a_set_up_cut_short_by_the_budget_goes_on_where_it_stopped(make_voipbin_app, voipbin,
                                                                              monkeypatch):
    monkeypatch.setattr("voicebot.voipbin.views.RESPONSE_BUDGET", 1.6)
    client = make_voipbin_app(VOIPBIN_TIMEOUT_SECONDS=1.0).test_client()
    voipbin.latency = 0.5
    call_id = voipbin.answer_call()
    statuses = [post_event(client, "call_progressing", voipbin.calls[call_id]).status_code for _ in range(3)]
    assert statuses[0] == 503 and 200 in statuses
    assert voipbin.said[call_id] == [GREETING] and one_live(voipbin, call_id)


@pytest.mark.parametrize("fault", ["fail_next", "lose_answer"])
def test_finding_16_a_say_that_may_have_been_heard_is_recorded_not_repeated(make_voipbin_app, voipbin, fault):
    client = make_voipbin_app(VOIPBIN_TIMEOUT_SECONDS=0.5).test_client()
    call_id = answer(client, voipbin)
    data = transcript_event_data(voipbin.transcribe_of(call_id), "mk1")
    getattr(voipbin, fault)["say"] = 1
    assert post_event(client, "transcript_created", data).get_json() == {"status": "said"}
    assert post_event(client, "transcript_created", data).get_json() == {"status": "duplicate"}
    assert speak(client, voipbin, call_id, "mk2").get_json() == {"status": "said"}
    assert voipbin.said[call_id][-1] == "Heard mk1 mk2."  # the first turn is in the history
    assert voipbin.said[call_id].count("Heard mk1.") <= 1


def test_finding_16_a_say_that_never_left_is_retried_by_voipbin(make_voipbin_app, voipbin):
    from .support import free_port

    app = make_voipbin_app()
    client = app.test_client()
    call_id = answer(client, voipbin)
    data = transcript_event_data(voipbin.transcribe_of(call_id), "mk1")
    bridge = runtime_of(app).platforms["voipbin"]
    real_url = bridge.client.api_url
    bridge.client.api_url = f"http://127.0.0.1:{free_port()}/v1.0"  # nothing listens: never sent
    refused = post_event(client, "transcript_created", data)
    assert refused.status_code == 503 and refused.get_json()["error"] == "voipbin_unavailable"
    bridge.client.api_url = real_url
    assert post_event(client, "transcript_created", data).get_json() == {"status": "said"}
    assert voipbin.said[call_id] == [GREETING, "Heard mk1."]


def test_finding_17_every_webhook_is_answered_within_the_budget(make_voipbin_app, voipbin, fake_llm, monkeypatch):
    """The model and VoIPBin's API both hang; the answer still comes inside the budget."""
    monkeypatch.setattr("voicebot.voipbin.views.RESPONSE_BUDGET", 3.0)
    client = make_voipbin_app(LLM_TIMEOUT_SECONDS=2.0, VOIPBIN_TIMEOUT_SECONDS=2.0).test_client()
    call_id = answer(client, voipbin)
    fake_llm.hang_rate = 1.0
    voipbin.hang_next["say"] = 1
    started = time.monotonic()
    response = speak(client, voipbin, call_id, "mk1")
    took = time.monotonic() - started
    assert response.status_code in (200, 503)
    assert took < 3.0 + 1.0, took  # the budget, plus room for a slow machine


def test_finding_18_the_access_key_is_never_logged_nor_put_in_a_url(make_voipbin_app, voipbin, caplog):
    from .support import free_port

    app = make_voipbin_app(VOIPBIN_TIMEOUT_SECONDS=0.3)
    client = app.test_client()
    root = logging.getLogger()
    handler = logging.StreamHandler()
    root.addHandler(handler)  # urllib3 prints the URL in its retry warning once any root handler exists
    try:
        with caplog.at_level(logging.DEBUG):
            call_id = answer(client, voipbin)
            transcribe_id = voipbin.transcribe_of(call_id)
            voipbin.lose_answer["say"] = 1
            speak(client, voipbin, call_id, "mk1")
            voipbin.hang_up(call_id)
            post_event(client, "transcript_created", transcript_event_data(transcribe_id, "mk2"))
            runtime_of(app).platforms["voipbin"].client.api_url = f"http://127.0.0.1:{free_port()}/v1.0"
            post_event(client, "transcript_created", transcript_event_data(transcribe_id, "mk3"))
    finally:
        root.removeHandler(handler)
    assert voipbin.access_key not in caplog.text
    assert "accesskey" not in caplog.text
    assert voipbin.requests and all("accesskey" not in path for _, path in voipbin.requests)


def test_a_reply_said_but_not_saved_is_not_said_again(make_voipbin_app, voipbin, monkeypatch, caplog):
    """The store fails after the say: the caller heard it, so VoIPBin must not be asked to send it again."""
    from voicebot.exceptions import StoreUnavailable

    app = make_voipbin_app()
    client = app.test_client()
    call_id = answer(client, voipbin)
    store = runtime_of(app).platforms["voipbin"].conversation.store
    real_write = store._write

    def failing_write(record, data, release, digest, lines):
        if lines:  # the turn's save, after the say
            raise StoreUnavailable("the store went away")
        return real_write(record, data, release, digest, lines)

    monkeypatch.setattr(store, "_write", failing_write)
    with caplog.at_level(logging.ERROR, logger="voicebot"):
        response = speak(client, voipbin, call_id, "mk1")
    assert response.status_code == 200 and response.get_json() == {"status": "said_not_recorded"}
    assert voipbin.said[call_id] == [GREETING, "Heard mk1."]
    assert "turn said but not saved" in caplog.text


def test_the_fakes_rate_limit_answers_429_with_retry_after_past_its_burst(voipbin):
    """VoIPBin's per-customer token bucket, as the fake keeps it when asked to."""
    import requests

    voipbin.limit_rate(rate=1.0, burst=2)
    url = voipbin.api_url + "/customer"
    cookies = {"accesskey": voipbin.access_key}
    answers = [requests.get(url, cookies=cookies, timeout=5) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[2].headers["Retry-After"] == "1"
    assert answers[2].json()["error"]["reason"] == "RATE_LIMITED"

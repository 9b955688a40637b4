"""The VoIPBin contract: signed events in, speech out through a strict fake of its REST API."""

from __future__ import annotations

import json
import logging
import threading

import pytest

from voicebot.voipbin.fake import FakeVoipbin, call_event_data, speech_event_data, transcript_event_data
from voicebot.voipbin.signing import HEADER, sign

GREETING = "Hello! How can I help you today?"


@pytest.fixture
def voipbin():
    with FakeVoipbin() as fake:
        yield fake


@pytest.fixture
def make_voipbin_app(make_app, voipbin):
    def make(**overrides):
        settings = {
            "VOIPBIN_WEBHOOK_SECRET": voipbin.webhook_secret,
            "VOIPBIN_ACCESS_KEY": voipbin.access_key,
            "VOIPBIN_API_URL": voipbin.api_url,
            "VOIPBIN_TIMEOUT_SECONDS": 1.0,
            **overrides,
        }
        return make_app(**settings)
    return make


@pytest.fixture
def client(make_voipbin_app):
    return make_voipbin_app().test_client()


def post_event(client, event_type, data, secret="test-webhook-secret-0123456789ab", signature=None):
    body = json.dumps({"type": event_type, "data": data}).encode()
    headers = {}
    if signature is not None:
        headers[HEADER] = signature
    elif secret is not None:
        headers[HEADER] = sign(body, secret)
    return client.post("/webhook/voipbin", data=body, headers=headers, content_type="application/json")


def answer(client, voipbin, call_id=None):
    call_id = voipbin.answer_call(call_id)
    response = post_event(client, "call_progressing", call_event_data(call_id, "progressing"))
    assert response.status_code == 200, response.get_json()
    return call_id


def speak(client, voipbin, call_id, message, direction="in", transcript_id=None):
    data = transcript_event_data(voipbin.transcribe_of(call_id), message, direction, transcript_id)
    return post_event(client, "transcript_created", data)


def test_a_whole_call(client, voipbin):
    call_id = answer(client, voipbin)
    transcribe_id = voipbin.transcribe_of(call_id)
    assert voipbin.transcribes[transcribe_id]["direction"] == "in"
    assert voipbin.said[call_id] == [GREETING]

    assert speak(client, voipbin, call_id, "I want to check mk1").get_json() == {"status": "said"}
    assert speak(client, voipbin, call_id, "order mk2").get_json() == {"status": "said"}
    assert voipbin.said[call_id] == [GREETING, "Heard mk1.", "Heard mk1 mk2."]

    hangup = post_event(client, "call_hangup", call_event_data(call_id, "hangup"))
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


def test_concurrent_deliveries_of_one_transcript_speak_once(make_voipbin_app, voipbin, fake_llm):
    app = make_voipbin_app()
    call_id = answer(app.test_client(), voipbin)
    data = transcript_event_data(voipbin.transcribe_of(call_id), "mk1")
    fake_llm.latency = 0.05
    statuses = []
    barrier = threading.Barrier(4)

    def deliver():
        barrier.wait()
        statuses.append(post_event(app.test_client(), "transcript_created", data).get_json()["status"])

    threads = [threading.Thread(target=deliver) for _ in range(4)]
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
    response = post_event(client, "call_progressing", call_event_data(call_id, "progressing"),
                          secret="someone-elses-secret")
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
    response = post_event(client, "call_progressing", call_event_data(call_id, "progressing"), secret=None)
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
    response = client.post("/webhook/voipbin", data=raw,
                           headers={HEADER: sign(raw, "test-webhook-secret-0123456789ab")})
    assert response.status_code == 400
    assert words in response.get_json()["message"]


def test_a_transcript_of_an_unknown_transcribe_is_retried_later(client, voipbin):
    response = post_event(client, "transcript_created", transcript_event_data("not-yet-known", "mk1"))
    assert response.status_code == 503  # VoIPBin retries a 5xx: the link may be recorded by then
    assert response.get_json()["error"] == "not_yet_known"
    assert voipbin.said == {}


def test_hangup_before_progressing_leaves_nothing_running(client, voipbin):
    call_id = voipbin.answer_call()
    assert post_event(client, "call_hangup", call_event_data(call_id, "hangup")).status_code == 200
    late = post_event(client, "call_progressing", call_event_data(call_id, "progressing"))
    assert late.get_json() == {"status": "ignored"}
    assert voipbin.transcribes == {} and voipbin.speakings == {} and voipbin.said == {}


def test_a_transcript_after_hangup_gets_no_reply(client, voipbin):
    call_id = answer(client, voipbin)
    transcribe_id = voipbin.transcribe_of(call_id)
    post_event(client, "call_hangup", call_event_data(call_id, "hangup"))
    late = post_event(client, "transcript_created", transcript_event_data(transcribe_id, "mk1"))
    assert late.get_json() == {"status": "ignored"}
    assert voipbin.said[call_id] == [GREETING]


def test_a_failing_say_is_answered_503_and_the_retry_says_it_once(client, voipbin, caplog):
    call_id = answer(client, voipbin)
    data = transcript_event_data(voipbin.transcribe_of(call_id), "mk1")
    voipbin.fail_next["say"] = 1
    with caplog.at_level(logging.WARNING, logger="voicebot"):
        failed = post_event(client, "transcript_created", data)
    assert failed.status_code == 503 and failed.get_json()["error"] == "voipbin_unavailable"
    assert f"call_id={call_id}" in caplog.text
    assert voipbin.access_key not in caplog.text
    assert post_event(client, "transcript_created", data).get_json() == {"status": "said"}
    speak(client, voipbin, call_id, "mk2")
    assert voipbin.said[call_id] == [GREETING, "Heard mk1.", "Heard mk1 mk2."]


def test_a_hanging_voipbin_api_times_out_into_a_503(make_voipbin_app, voipbin):
    client = make_voipbin_app(VOIPBIN_TIMEOUT_SECONDS=0.3).test_client()
    call_id = answer(client, voipbin)
    voipbin.hang_next["say"] = 1
    response = speak(client, voipbin, call_id, "mk1")
    assert response.status_code == 503
    assert voipbin.said[call_id] == [GREETING]


def test_a_refused_say_is_logged_and_not_retried(client, voipbin, caplog):
    call_id = answer(client, voipbin)
    voipbin.hang_up(call_id)  # VoIPBin refuses speech into a call that is not progressing
    with caplog.at_level(logging.ERROR, logger="voicebot"):
        response = speak(client, voipbin, call_id, "mk1")
    assert response.status_code == 200 and response.get_json() == {"status": "not_said"}
    assert "reply not said" in caplog.text and "HTTP 400" in caplog.text


def test_setup_failure_is_retried_and_leaves_nothing_behind(client, voipbin):
    call_id = voipbin.answer_call()
    voipbin.fail_next["transcribes"] = 1
    response = post_event(client, "call_progressing", call_event_data(call_id, "progressing"))
    assert response.status_code == 503
    assert all(s["status"] == "stopped" for s in voipbin.speakings.values())  # undone
    answer(client, voipbin, call_id)  # VoIPBin's retry
    assert voipbin.said[call_id] == [GREETING]
    assert voipbin.transcribe_of(call_id)


def test_barge_in_flushes_while_the_bot_speaks(client, voipbin):
    call_id = answer(client, voipbin)
    speak(client, voipbin, call_id, "mk1")
    started = post_event(client, "transcribe_speech_started", speech_event_data(voipbin.transcribe_of(call_id)))
    assert started.get_json() == {"status": "flushed"}
    assert len(voipbin.flushed) == 1


def test_no_flush_once_the_bot_has_finished(make_voipbin_app, voipbin):
    app = make_voipbin_app()
    client = app.test_client()
    call_id = answer(client, voipbin)
    bridge = app.extensions["voipbin"]
    bridge.clock = lambda: 4e9  # long after the greeting ended
    started = post_event(client, "transcribe_speech_started", speech_event_data(voipbin.transcribe_of(call_id)))
    assert started.get_json() == {"status": "not_speaking"}
    assert voipbin.flushed == []


def test_barge_in_can_be_turned_off(make_voipbin_app, voipbin):
    client = make_voipbin_app(VOIPBIN_BARGE_IN=False).test_client()
    call_id = answer(client, voipbin)
    started = post_event(client, "transcribe_speech_started", speech_event_data(voipbin.transcribe_of(call_id)))
    assert started.get_json() == {"status": "ignored"}
    assert voipbin.flushed == []


def test_the_fetch_action_hands_a_call_to_voicebot(client, voipbin):
    call_id = voipbin.answer_call()
    fetched = client.post("/webhook/voipbin/fetch", json={"activeflow_id": "af-1", "reference_id": call_id})
    assert fetched.status_code == 200
    assert fetched.get_json() == [
        {"type": "answer"},
        {"type": "talk", "option": {"text": GREETING, "language": "en-US"}},
        {"type": "transcribe_start", "option": {"language": "en-US", "direction": "in"}},
    ]
    # The flow greets and transcribes; call_progressing only opens the speaking session.
    answer(client, voipbin, call_id)
    assert voipbin.transcribes == {} and call_id not in voipbin.said
    transcribe_id = "flow-transcribe-1"
    created = post_event(client, "transcribe_created",
                         {"id": transcribe_id, "reference_type": "call", "reference_id": call_id,
                          "status": "progressing", "language": "en-US", "direction": "in"})
    assert created.get_json() == {"status": "recorded"}
    said = post_event(client, "transcript_created", transcript_event_data(transcribe_id, "mk1"))
    assert said.get_json() == {"status": "said"}
    assert voipbin.said[call_id] == ["Heard mk1."]


@pytest.mark.parametrize("body", [{}, {"reference_id": "c"}, {"activeflow_id": "a"},
                                  {"activeflow_id": "a", "reference_id": 5}])
def test_fetch_rejects_bad_input(client, body):
    response = client.post("/webhook/voipbin/fetch", json=body)
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_event"


def test_language_provider_and_voice_are_configurable(make_voipbin_app, voipbin):
    client = make_voipbin_app(VOIPBIN_LANGUAGE="de-DE", VOIPBIN_TTS_PROVIDER="elevenlabs",
                              VOIPBIN_VOICE_ID="voice-7").test_client()
    call_id = answer(client, voipbin)
    (speaking,) = voipbin.speakings.values()
    assert speaking == {"call_id": call_id, "status": "initiating", "language": "de-DE",
                        "provider": "elevenlabs", "voice_id": "voice-7"}
    assert voipbin.transcribes[voipbin.transcribe_of(call_id)]["direction"] == "in"


def test_a_put_delivery_is_taken_too(client, voipbin):
    call_id = voipbin.answer_call()
    body = json.dumps({"type": "call_progressing", "data": call_event_data(call_id, "progressing")}).encode()
    response = client.put("/webhook/voipbin", data=body,
                          headers={HEADER: sign(body, "test-webhook-secret-0123456789ab")})
    assert response.status_code == 200
    assert voipbin.said[call_id] == [GREETING]

"""Calls voicebot places: POST /calls and `voicebot call`, on VoIPBin and Twilio, against strict fakes."""

from __future__ import annotations

import json

import pytest
import requests

from voicebot.cli import main as cli_main
from voicebot_testing.fake_twilio import FakeTwilio
from voicebot_testing.fake_voipbin import transcript_event_data
from voicebot.exceptions import ConfigError
from voicebot.platforms import load_config
from voicebot.runtime import runtime_of

from .support import ServedApp, free_port, wait_for
from .test_twilio import PUBLIC, post
from .test_voipbin import post_event

TOKEN = "outbound-token"
OURS = "+15559870000"
ANA = "+15551112222"
GREETING = "Hello {{name}}, this is Example Dental about your appointment on {{slot}}."
PROMPT = "You call {{name}} to confirm an appointment on {{slot}}."
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def outbound_settings(**more) -> dict:
    return {"OUTBOUND_NUMBER": OURS, "OUTBOUND_TOKEN": TOKEN, "PUBLIC_URL": PUBLIC, "OUTBOUND_GREETING": GREETING,
            "OUTBOUND_SYSTEM_PROMPT": PROMPT, **more}


@pytest.fixture
def twilio():
    server = FakeTwilio().start()
    yield server
    server.stop()


@pytest.fixture
def voipbin_outbound(make_voipbin_app):
    def make(**more):
        return make_voipbin_app(**outbound_settings(**more))
    return make


@pytest.fixture
def twilio_outbound(make_app, twilio):
    def make(**more):
        return make_app(**outbound_settings(TWILIO_AUTH_TOKEN=twilio.auth_token, TWILIO_ACCOUNT_SID=twilio.account_sid,
                                            TWILIO_API_URL=twilio.api_url, **more))
    return make


def place(client, to=ANA, **variables):
    return client.post("/calls", json={"to": to, "variables": variables or {"name": "Ana", "slot": "Tuesday 3 pm"}},
                       headers=AUTH)


def records_of(app) -> list[dict]:
    return list(runtime_of(app).records.export(0))


# -- who may place a call, and with what ------------------------------------------------------

def test_no_token_no_calls(make_voipbin_app, voipbin):
    app = make_voipbin_app(**outbound_settings(OUTBOUND_TOKEN="", WEBHOOK_TOKEN=""))
    answer = app.test_client().post("/calls", json={"to": ANA})
    assert answer.status_code == 404 and answer.get_json()["error"] == "outbound_disabled"
    assert voipbin.placed == []


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}, {"Authorization": TOKEN}])
def test_an_anonymous_or_wrong_token_places_nothing(voipbin_outbound, voipbin, headers):
    answer = voipbin_outbound().test_client().post("/calls", json={"to": ANA}, headers=headers)
    assert answer.status_code == 401 and voipbin.placed == []


def test_the_webhook_token_serves_when_there_is_no_token_of_its_own(voipbin_outbound, voipbin):
    client = voipbin_outbound(OUTBOUND_TOKEN="", WEBHOOK_TOKEN="hook").test_client()
    answer = client.post("/calls", json={"to": ANA, "variables": {"name": "Ana", "slot": "Tue"}},
                         headers={"Authorization": "Bearer hook"})
    assert answer.status_code == 201, answer.get_json()


@pytest.mark.parametrize("body, words", [
    ({"to": "5551112222"}, "E.164"),
    ({"to": "+1555 111 2222"}, "E.164"),
    ({}, "'to'"),
    ({"to": ANA, "variables": ["Ana"]}, "'variables' must be a JSON object"),
    ({"to": ANA, "variables": {"name": "Ana"}}, "no value for slot"),
    ({"to": ANA, "variables": {"name": "", "slot": "Tue"}}, "no value for name"),
    ({"to": ANA, "variables": {"name": "Ana", "slot": "Tue"}, "platform": "twilio"}, "'platform' must be one of"),
])
def test_a_call_that_could_only_fail_later_is_refused_now(voipbin_outbound, voipbin, body, words):
    answer = voipbin_outbound().test_client().post("/calls", json=body, headers=AUTH)
    assert answer.status_code == 400 and words in answer.get_json()["message"], answer.get_json()
    assert voipbin.placed == []


# -- VoIPBin ---------------------------------------------------------------------------------

def test_voipbin_a_placed_call_is_voicebots_and_greets_the_contact_by_name(voipbin_outbound, voipbin, fake_llm):
    app = voipbin_outbound()
    client = app.test_client()
    answer = place(client)
    assert answer.status_code == 201, answer.get_json()
    call_id = answer.get_json()["call_id"]
    assert answer.get_json() == {"call_id": call_id, "platform": "voipbin", "status": "placed"}
    (placed,) = voipbin.placed
    assert placed["source"] == {"type": "tel", "target": OURS}
    assert placed["destinations"] == [{"type": "tel", "target": ANA}]
    assert placed["actions"][0] == {"type": "amd", "option": {"machine_handle": "hangup"}}
    assert placed["actions"][1]["type"] == "fetch"
    assert placed["actions"][1]["option"]["event_url"].startswith(f"{PUBLIC}/webhook/voipbin/fetch?token=")
    assert placed["variables"] == {"name": "Ana", "slot": "Tuesday 3 pm"}
    voipbin.answer_call(call_id)
    assert post_event(client, "call_progressing", voipbin.calls[call_id]).get_json() == {"status": "answered"}
    assert voipbin.said[call_id] == ["Hello Ana, this is Example Dental about your appointment on Tuesday 3 pm."]
    data = transcript_event_data(voipbin.transcribe_of(call_id), "yes that works mk1")
    assert post_event(client, "transcript_created", data).get_json()["status"] == "said"
    system = json.dumps(fake_llm.requests[-1]["system"])
    assert "You call Ana to confirm an appointment on Tuesday 3 pm." in system
    post_event(client, "call_hangup", voipbin.hang_up(call_id))
    (record,) = records_of(app)
    assert record["direction"] == "outbound" and record["outcome"] == "human"
    assert record["caller"] == ANA and record["called"] == OURS
    assert record["variables"] == {"name": "Ana", "slot": "Tuesday 3 pm"}


@pytest.mark.parametrize("answered, reason, outcome", [
    (False, "busy", "busy"), (False, "noanswer", "no_answer"), (False, "failed", "failed"),
    (True, "amd", "voicemail"),
])
def test_voipbin_a_call_no_person_answered_has_its_outcome(voipbin_outbound, voipbin, answered, reason, outcome):
    app = voipbin_outbound()
    client = app.test_client()
    call_id = place(client).get_json()["call_id"]
    if answered:
        voipbin.answer_call(call_id)
    post_event(client, "call_hangup", voipbin.hang_up(call_id, reason=reason))
    (record,) = records_of(app)
    assert record["outcome"] == outcome and record["end_reason"] == outcome


# -- Twilio ----------------------------------------------------------------------------------

def test_twilio_a_placed_call_greets_a_person_by_name(twilio_outbound, twilio, fake_llm):
    app = twilio_outbound()
    client = app.test_client()
    answer = place(client)
    assert answer.status_code == 201, answer.get_json()
    sid = answer.get_json()["call_id"]
    placed = twilio.call(sid)
    assert placed["To"] == ANA and placed["From"] == OURS
    assert placed["Url"] == f"{PUBLIC}/webhook/twilio/voice" and placed["Method"] == "POST"
    assert placed["StatusCallback"] == f"{PUBLIC}/webhook/twilio/status"
    assert placed["MachineDetection"] == "Enable"  # no message to leave: a machine is hung up on at once
    response = post(client, f"{PUBLIC}/webhook/twilio/voice", twilio.answer_fields(sid, "human"))
    assert b"Hello Ana, this is Example Dental about your appointment on Tuesday 3 pm." in response.data
    assert b"<Gather" in response.data
    turn = post(client, f"{PUBLIC}/webhook/twilio/turn?n=1", {**twilio.answer_fields(sid), "SpeechResult": "yes mk1"})
    assert b"Heard mk1." in turn.data
    assert "You call Ana to confirm" in json.dumps(fake_llm.requests[-1]["system"])
    post(client, f"{PUBLIC}/webhook/twilio/status", twilio.status_fields(sid, "completed", 42))
    (record,) = records_of(app)
    assert record["direction"] == "outbound" and record["outcome"] == "human" and record["caller"] == ANA
    assert record["called"] == OURS and record["duration_seconds"] >= 0


def test_twilio_a_voicemail_gets_the_message_after_the_beep(twilio_outbound, twilio):
    app = twilio_outbound(VOICEMAIL_MESSAGE="Hi {{name}}, please call Example Dental back about {{slot}}.")
    client = app.test_client()
    sid = place(client).get_json()["call_id"]
    assert twilio.call(sid)["MachineDetection"] == "DetectMessageEnd"
    response = post(client, f"{PUBLIC}/webhook/twilio/voice", twilio.answer_fields(sid, "machine_end_beep"))
    assert b"Hi Ana, please call Example Dental back about Tuesday 3 pm." in response.data
    assert b"<Hangup" in response.data and b"<Gather" not in response.data
    (record,) = records_of(app)
    assert record["outcome"] == "voicemail" and record["answered_by"] == "machine_end_beep"
    assert record["transcript"][-1]["text"].startswith("Hi Ana, please call")
    post(client, f"{PUBLIC}/webhook/twilio/status", twilio.status_fields(sid, "completed", 9))
    assert len(records_of(app)) == 1


def test_twilio_a_machine_is_hung_up_on_when_there_is_no_message(twilio_outbound, twilio):
    app = twilio_outbound()
    client = app.test_client()
    sid = place(client).get_json()["call_id"]
    response = post(client, f"{PUBLIC}/webhook/twilio/voice", twilio.answer_fields(sid, "machine_start"))
    assert b"<Say" not in response.data and b"<Hangup" in response.data
    (record,) = records_of(app)
    assert record["outcome"] == "voicemail"


@pytest.mark.parametrize("status, outcome", [("busy", "busy"), ("no-answer", "no_answer"), ("failed", "failed"),
                                             ("canceled", "cancelled")])
def test_twilio_a_call_no_one_answered_has_its_outcome(twilio_outbound, twilio, status, outcome):
    app = twilio_outbound()
    client = app.test_client()
    sid = place(client).get_json()["call_id"]
    post(client, f"{PUBLIC}/webhook/twilio/status", twilio.status_fields(sid, status))
    (record,) = records_of(app)
    assert record["outcome"] == outcome and record["direction"] == "outbound"


def test_twilio_down_is_a_503_and_nothing_half_made(twilio_outbound, twilio):
    twilio.fail_next = 1
    app = twilio_outbound()
    answer = place(app.test_client())
    assert answer.status_code == 503 and answer.get_json()["error"] == "twilio_unavailable"
    assert twilio.placed == [] and records_of(app) == []


def test_with_both_platforms_a_request_says_which(twilio_outbound, twilio, voipbin):
    app = twilio_outbound(VOIPBIN_WEBHOOK_SECRET=voipbin.webhook_secret, VOIPBIN_ACCESS_KEY=voipbin.access_key,
                          VOIPBIN_API_URL=voipbin.api_url, VOIPBIN_FETCH_TOKEN="ft")
    client = app.test_client()
    assert "say which platform" in place(client).get_json()["message"]
    answer = client.post("/calls", json={"to": ANA, "platform": "voipbin",
                                         "variables": {"name": "Ana", "slot": "Tue"}}, headers=AUTH)
    assert answer.get_json()["platform"] == "voipbin" and len(voipbin.placed) == 1 and twilio.placed == []


# -- the command, and the settings -------------------------------------------------------------

def test_voicebot_call_places_a_call_through_the_running_service(voipbin_outbound, voipbin, monkeypatch, capsys):
    served = ServedApp(voipbin_outbound())
    try:
        monkeypatch.setenv("OUTBOUND_TOKEN", TOKEN)
        code = cli_main(["call", ANA, "--var", "name=Ana", "--var", "slot=Tuesday 3 pm", "--url", served.url])
        assert code == 0
        (placed,) = voipbin.placed
        assert placed["variables"] == {"name": "Ana", "slot": "Tuesday 3 pm"}
        assert f"placed call {placed['call_ids'][0]} on voipbin" in capsys.readouterr().out
        assert cli_main(["call", ANA, "--var", "name=Ana", "--url", served.url]) == 1
        err = capsys.readouterr().err
        assert "no value for slot" in err and err.endswith("(HTTP 400)\n")
    finally:
        served.stop()


@pytest.mark.parametrize("settings, words", [
    ({"OUTBOUND_NUMBER": "5559870000"}, "OUTBOUND_NUMBER must be a number in E.164 form"),
    ({"OUTBOUND_NUMBER": OURS}, "no platform can place calls"),
    ({"OUTBOUND_NUMBER": OURS, "PUBLIC_URL": PUBLIC, "VOIPBIN_ACCESS_KEY": "k", "VOIPBIN_FETCH_TOKEN": "t",
      "OUTBOUND_PLATFORM": "twilio"}, "OUTBOUND_PLATFORM=twilio, which cannot place calls"),
    ({"OUTBOUND_NUMBER": OURS, "OUTBOUND_PLATFORM": "skype"}, "OUTBOUND_PLATFORM must be one of"),
])
def test_outbound_settings_that_could_only_fail_later_are_refused(settings, words):
    with pytest.raises(ConfigError, match=words):
        load_config(settings)


@pytest.mark.parametrize("number, outcome", [("+15551110001", "busy"), ("+15551110002", "no_answer"),
                                             ("+15551110003", "voicemail"), ("+15551112222", "human")])
def test_voipbin_placed_calls_end_to_end_over_http(make_voipbin_app, voipbin, number, outcome):
    """The fake places the call as VoIPBin does, sends its events over HTTP and runs its flow (fetch loop)."""
    port = free_port()
    app = make_voipbin_app(**outbound_settings(PUBLIC_URL=f"http://127.0.0.1:{port}"))
    served = ServedApp(app, port)
    voipbin.webhook_url = served.url + "/webhook/voipbin"
    voipbin.ring_seconds, voipbin.talk_seconds = 0.05, 0.5
    try:
        answer = requests.post(served.url + "/calls", json={"to": number, "variables": {"name": "Ana", "slot": "Tue"}},
                               headers=AUTH, timeout=10)
        assert answer.status_code == 201, answer.text
        call_id = answer.json()["call_id"]
        (record,) = wait_for(lambda: records_of(app), timeout=15, what="the call's record")
    finally:
        served.stop()
    assert record["call_id"] == call_id and record["outcome"] == outcome
    greeted = voipbin.said.get(call_id, [])
    assert greeted == (["Hello Ana, this is Example Dental about your appointment on Tue."]
                       if outcome in ("human", "voicemail") else [])


def test_a_call_or_campaign_may_hang_up_on_machines_rather_than_leave_the_message(twilio_outbound, twilio):
    app = twilio_outbound(VOICEMAIL_MESSAGE="Hi {{name}}, call us back.")
    client = app.test_client()
    answer = client.post("/calls", json={"to": ANA, "variables": {"name": "Ana", "slot": "Tue"},
                                         "voicemail": "hangup"}, headers=AUTH)
    sid = answer.get_json()["call_id"]
    assert twilio.call(sid)["MachineDetection"] == "Enable"  # no waiting for a beep: nothing to leave
    response = post(client, f"{PUBLIC}/webhook/twilio/voice", twilio.answer_fields(sid, "machine_start"))
    assert b"<Say" not in response.data and b"<Hangup" in response.data
    assert records_of(app)[0]["outcome"] == "voicemail"
    refused = client.post("/calls", json={"to": ANA, "variables": {"name": "A", "slot": "B"}, "voicemail": "sms"},
                          headers=AUTH)
    assert refused.status_code == 400 and "'voicemail' must be one of message, hangup" in refused.get_json()["message"]


# Premium-rate and foreign destinations: a leaked token must not become toll fraud.

@pytest.mark.parametrize("to, why", [("+19005551234", "premium-rate"), ("+449098790123", "outside"),
                                     ("+881612345678", "outside"), ("+882345678901", "outside")])
def test_a_premium_or_foreign_destination_is_refused_before_anything_is_dialled(voipbin_outbound, voipbin, to, why):
    app = voipbin_outbound()
    answer = place(app.test_client(), to=to)
    assert answer.status_code == 403 and answer.json["error"] == "destination_not_allowed"
    assert why in answer.json["message"]
    assert voipbin.calls == {}


def test_the_allowlist_widens_and_premium_numbers_need_their_own_yes(voipbin_outbound, voipbin):
    app = voipbin_outbound(DIAL_ALLOWED=("+1", "+44"))
    assert place(app.test_client(), to="+442079460000").status_code == 201
    assert place(app.test_client(), to="+449098790123").status_code == 403  # premium inside an allowed country
    app = voipbin_outbound(DIAL_ALLOWED=("*",), DIAL_PREMIUM=True)
    assert place(app.test_client(), to="+449098790123").status_code == 201


def test_a_campaign_with_one_premium_contact_is_refused_whole(voipbin_outbound, voipbin):
    app = voipbin_outbound()
    contacts = [{"phone": ANA, "variables": {"name": "Ana", "slot": "Tue"}},
                {"phone": "+19005551234", "variables": {"name": "Cy", "slot": "Wed"}}]
    answer = app.test_client().post("/campaigns", json={"contacts": contacts}, headers=AUTH)
    assert answer.status_code == 403 and "contact 2" in answer.json["message"]
    assert "premium-rate" in answer.json["message"]
    assert voipbin.calls == {}


@pytest.mark.parametrize("value", ["1,44", "+0", "+1x"])
def test_a_bad_allowlist_is_refused_at_start(value):
    words = "E.164 prefixes"
    with pytest.raises(ConfigError, match=words):
        load_config({"DIAL_ALLOWED": value})


def test_a_campaign_too_large_is_told_its_own_limit(voipbin_outbound):
    app = voipbin_outbound()
    answer = app.test_client().post("/campaigns", data=b"{" + b" " * (9 << 20) + b"}", headers=AUTH,
                                    content_type="application/json")
    assert answer.status_code == 413 and "8388608 bytes" in answer.json["message"]

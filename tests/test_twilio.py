"""Twilio's <Gather> speech loop: requests signed with Twilio's own RequestValidator, on both stores."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from urllib.parse import urlsplit

import pytest
from twilio.request_validator import RequestValidator

from voicebot.exceptions import StoreUnavailable
from voicebot.runtime import runtime_of

TOKEN = "twilio-auth-token-for-tests"
PUBLIC = "https://bot.example.com"
OUR_NUMBER = "+15559870000"
CALLER = "+15551230000"
HUMANS = "+15550009999"


def new_sid() -> str:
    return "CA" + uuid.uuid4().hex


def signature(url: str, fields: dict, token: str = TOKEN) -> str:
    return RequestValidator(token).compute_signature(url, fields)


def post(client, url: str, fields: dict, *, token: str = TOKEN, signed_url: str | None = None, **headers):
    """POST as Twilio does: form-encoded, X-Twilio-Signature over the URL it called and every field."""
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    if token:
        headers["X-Twilio-Signature"] = signature(signed_url or url, fields, token)
    return client.post(path, data=fields, headers=headers)


def call_fields(sid: str, **more) -> dict:
    return {"CallSid": sid, "AccountSid": "AC" + "0" * 32, "From": CALLER, "To": OUR_NUMBER,
            "CallStatus": "in-progress", "Direction": "inbound", "ApiVersion": "2010-04-01", **more}


class Call:
    """One caller following the TwiML it is given, as Twilio does."""

    def __init__(self, client, sid: str | None = None) -> None:
        self.client = client
        self.sid = sid or new_sid()
        self.action: str | None = None
        self.last = None

    def _follow(self, response) -> ET.Element:
        assert response.status_code == 200, response.data
        assert response.mimetype == "text/xml"
        root = ET.fromstring(response.data)
        gather = root.find("Gather")
        self.action = gather.get("action") if gather is not None else None
        self.last = root
        return root

    def start(self) -> ET.Element:
        fields = call_fields(self.sid, CallStatus="ringing")
        return self._follow(post(self.client, f"{PUBLIC}/webhook/twilio/voice", fields))

    def say(self, text: str | None) -> ET.Element:
        assert self.action, "the last answer did not listen"
        fields = call_fields(self.sid, **({"SpeechResult": text, "Confidence": "0.92"} if text else {}))
        return self._follow(post(self.client, self.action, fields))

    def heard(self) -> str:
        return " ".join(say.text or "" for say in self.last.iter("Say"))


@pytest.fixture
def twilio_app(make_app):
    def make(**overrides):
        return make_app(TWILIO_AUTH_TOKEN=TOKEN, PUBLIC_URL=PUBLIC, **overrides)
    return make


def records_of(app) -> list[dict]:
    return list(runtime_of(app).records.export(0))


def session_of(app, sid):
    conversation = runtime_of(app).conversations["twilio"]
    return conversation.store.peek(conversation.key(sid))


# -- the loop -----------------------------------------------------------------------------------

def test_the_greeting_is_said_inside_a_gather_that_posts_the_speech_back(twilio_app):
    app = twilio_app()
    call = Call(app.test_client())
    root = call.start()
    gather = root.find("Gather")
    assert gather.get("input") == "speech" and gather.get("method") == "POST"
    assert gather.get("actionOnEmptyResult") == "true" and gather.get("language") == "en-US"
    say = gather.find("Say")  # inside the Gather: the caller can talk over it
    assert say.text == app.config["GREETING"]
    assert say.get("voice") == "Polly.Joanna-Neural"
    assert call.action == f"{PUBLIC}/webhook/twilio/turn?n=1"


def test_each_turn_answers_inside_the_next_gather_and_the_history_is_the_calls_own(twilio_app, fake_llm):
    app = twilio_app()
    call, other = Call(app.test_client()), Call(app.test_client())
    call.start(), other.start()
    call.say("mk1 please")
    assert call.heard() == "Heard mk1."
    other.say("mk9 please")
    call.say("and mk2")
    assert call.heard() == "Heard mk1 mk2."
    assert call.action == f"{PUBLIC}/webhook/twilio/turn?n=3"
    assert other.heard() == "Heard mk9."
    assert session_of(app, call.sid)["caller"] == CALLER


def test_the_voice_and_language_follow_the_settings(twilio_app):
    call = Call(twilio_app(TWILIO_VOICE="Google.en-GB-Neural2-A", TWILIO_LANGUAGE="en-GB").test_client())
    root = call.start()
    assert root.find("Gather").get("language") == "en-GB"
    assert root.find("Gather/Say").get("voice") == "Google.en-GB-Neural2-A"


def test_a_request_sent_again_gets_the_same_reply_without_asking_the_model_twice(twilio_app, fake_llm):
    app = twilio_app()
    call = Call(app.test_client())
    call.start()
    action = call.action
    call.say("mk1 please")
    first = call.heard()
    asked = len(fake_llm.requests)
    call.action = action  # Twilio did not get the answer, and posts the same request again
    call.say("mk1 please")
    assert call.heard() == first == "Heard mk1."
    assert len(fake_llm.requests) == asked
    call.say("mk2")
    assert call.heard() == "Heard mk1 mk2."  # one mk1 in the history, not two


# -- silence, hang-up, hand-off, records --------------------------------------------------------

def test_silence_reprompts_and_then_ends_the_call_politely(twilio_app):
    app = twilio_app(TWILIO_MAX_SILENCES=2)
    call = Call(app.test_client())
    call.start()
    call.say(None)
    assert call.heard() == "Are you still there?" and call.action.endswith("n=2")
    repeated = call.action
    call.say(None)
    call.action = repeated  # the same silence delivered twice counts once
    call.say(None)
    assert call.heard() == "Are you still there?"
    call.say(None)
    assert call.last.find("Hangup") is not None and call.heard() == app.config["GOODBYE_LINE"]
    (record,) = records_of(app)
    assert record["end_reason"] == "silence" and record["platform"] == "twilio"


def test_words_after_a_silence_start_the_count_again(twilio_app):
    call = Call(twilio_app(TWILIO_MAX_SILENCES=1).test_client())
    call.start()
    call.say(None)
    call.say("mk1")
    call.say(None)
    assert call.heard() == "Are you still there?"


def test_the_model_ending_the_call_says_goodbye_then_hangs_up(twilio_app):
    app = twilio_app()
    call = Call(app.test_client())
    call.start()
    call.say("mk1")
    root = call.say("thanks, goodbye mk2")
    assert [child.tag for child in root] == ["Say", "Hangup"]
    assert call.heard() == "Heard mk1 mk2."
    (record,) = records_of(app)
    assert record["end_reason"] == "bot_ended" and record["call_id"] == call.sid
    assert [line["text"] for line in record["transcript"]][:2] == [app.config["GREETING"], "mk1"]


def test_the_model_handing_over_dials_the_transfer_number(twilio_app):
    app = twilio_app(TRANSFER_NUMBER=HUMANS)
    call = Call(app.test_client())
    call.start()
    root = call.say("a human please mk1")
    assert [child.tag for child in root] == ["Say", "Dial"] and root.find("Dial").text == HUMANS
    (record,) = records_of(app)
    assert record["end_reason"] == "transferred" and record["transferred_to"] == HUMANS


def test_the_status_callback_ends_the_call_with_its_record_once(twilio_app):
    app = twilio_app()
    client = app.test_client()
    call = Call(client)
    call.start()
    call.say("mk1")
    for _ in range(2):
        response = post(client, f"{PUBLIC}/webhook/twilio/status",
                        call_fields(call.sid, CallStatus="completed", CallDuration="42"))
        assert response.status_code == 200
    (record,) = records_of(app)
    assert record["end_reason"] == "ended" and record["turns"] == 1
    root = call.say("mk2")  # a late turn of a call that has hung up does not reopen it
    assert root.find("Hangup") is not None and session_of(app, call.sid) is None


# -- signatures ------------------------------------------------------------------------------

@pytest.mark.parametrize("forgery", ["missing", "other token", "other url", "field changed"])
def test_a_request_not_signed_by_twilio_is_refused_and_changes_nothing(twilio_app, fake_llm, forgery):
    app = twilio_app()
    client = app.test_client()
    sid = new_sid()
    fields = call_fields(sid, SpeechResult="mk1")
    url = f"{PUBLIC}/webhook/twilio/turn?n=1"
    if forgery == "missing":
        response = post(client, url, fields, token="")
    elif forgery == "other token":
        response = post(client, url, fields, token="someone-elses-token")
    elif forgery == "other url":
        response = post(client, url, fields, signed_url="https://attacker.example/webhook/twilio/turn?n=1")
    else:
        response = client.post("/webhook/twilio/turn?n=1", data={**fields, "SpeechResult": "mk2"},
                               headers={"X-Twilio-Signature": signature(url, fields)})
    assert response.status_code == 403
    assert response.get_json()["error"] == "invalid_signature"
    assert session_of(app, sid) is None and fake_llm.requests == []


def test_without_public_url_the_signature_covers_the_url_the_request_came_to(make_app):
    app = make_app(TWILIO_AUTH_TOKEN=TOKEN)
    client = app.test_client()
    fields = call_fields(new_sid())
    good = post(client, "http://localhost/webhook/twilio/voice", fields)
    assert good.status_code == 200
    assert ET.fromstring(good.data).find("Gather").get("action") == "http://localhost/webhook/twilio/turn?n=1"
    # A forwarded header from anybody is not believed: the URL signed was not this request's.
    forwarded = post(client, "https://bot.example.com/webhook/twilio/voice", fields,
                     **{"X-Forwarded-Proto": "https", "X-Forwarded-Host": "bot.example.com"})
    assert forwarded.status_code == 403


def test_a_trusted_proxys_forwarded_scheme_and_host_are_believed(make_app):
    app = make_app(TWILIO_AUTH_TOKEN=TOKEN, TRUSTED_PROXIES=("127.0.0.1",))
    client = app.test_client()
    response = post(client, "https://bot.example.com/webhook/twilio/voice", call_fields(new_sid()),
                    **{"X-Forwarded-Proto": "https", "X-Forwarded-Host": "bot.example.com"})
    assert response.status_code == 200
    assert ET.fromstring(response.data).find("Gather").get("action").startswith("https://bot.example.com/")


def test_without_an_auth_token_the_endpoints_are_off_and_start_up_says_so(make_app, caplog):
    app = make_app()
    assert "/webhook/twilio is off: set TWILIO_AUTH_TOKEN" in caplog.text
    response = post(app.test_client(), f"{PUBLIC}/webhook/twilio/voice", call_fields(new_sid()))
    assert response.status_code == 404 and response.get_json()["error"] == "twilio_disabled"


def test_the_auth_token_is_never_logged(twilio_app, caplog):
    call = Call(twilio_app(LOG_LEVEL="DEBUG").test_client())
    call.start()
    call.say("mk1")
    post(call.client, call.action, call_fields(call.sid, SpeechResult="x"), token="wrong")
    assert TOKEN not in caplog.text


@pytest.mark.parametrize("url", ["ftp://bot.example.com", "https://bot.example.com/?x=1", "bot.example.com"])
def test_a_public_url_that_cannot_be_one_is_refused_at_start(make_app, url):
    from voicebot.exceptions import ConfigError

    with pytest.raises(ConfigError, match="PUBLIC_URL"):
        make_app(TWILIO_AUTH_TOKEN=TOKEN, PUBLIC_URL=url)


# -- failures are TwiML the caller hears ------------------------------------------------------

def test_a_store_failure_mid_turn_says_the_fallback_and_listens_again(twilio_app, monkeypatch):
    app = twilio_app()
    call = Call(app.test_client())
    call.start()

    def down(*args, **kwargs):
        raise StoreUnavailable("redis went away")

    monkeypatch.setattr(runtime_of(app).conversations["twilio"], "take_turn", down)
    root = call.say("mk1")
    assert call.heard() == app.config["FALLBACK_REPLY"] and root.find("Gather") is not None
    assert call.action.endswith("n=2")


def test_an_unexpected_failure_is_logged_with_the_call_id_and_still_answers_twiml(twilio_app, monkeypatch, caplog):
    app = twilio_app()
    call = Call(app.test_client())
    call.start()
    monkeypatch.setattr(runtime_of(app).conversations["twilio"], "take_turn",
                        lambda *a, **k: 1 / 0)
    call.say("mk1")
    assert call.heard() == app.config["FALLBACK_REPLY"]
    assert f"call_id={call.sid}" in caplog.text and "ZeroDivisionError" in caplog.text


def test_a_model_past_its_deadline_gives_the_fallback_in_time(twilio_app, fake_llm, monkeypatch):
    app = twilio_app(LLM_TIMEOUT_SECONDS=0.5)
    monkeypatch.setattr(fake_llm, "latency", 2.0)
    call = Call(app.test_client())
    call.start()
    call.say("mk1")
    assert call.heard() == app.config["FALLBACK_REPLY"]


@pytest.mark.parametrize("fields", [{}, {"CallSid": "not-a-call"}, {"CallSid": "CA" + "g" * 32}])
def test_a_signed_request_without_a_call_id_is_a_clear_400(twilio_app, fields):
    response = post(twilio_app().test_client(), f"{PUBLIC}/webhook/twilio/voice", fields)
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_event"


def test_a_new_call_past_capacity_hears_busy(twilio_app):
    app = twilio_app()
    admission = runtime_of(app).admission
    admission.in_flight = admission.limit
    root = Call(app.test_client()).start()
    assert root.find("Reject").get("reason") == "busy"

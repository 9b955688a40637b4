"""VoIPBin: the reply streamed from the model and said sentence by sentence, against the strict fakes."""

from __future__ import annotations

import threading
import time

import pytest

from voicebot_testing.fake_voipbin import speech_event_data
from voicebot.runtime import runtime_of

from .support import wait_for
from .test_voipbin import answer, post_event, speak

SENTENCES = ["Heard mk1.", "I have noted that.", "Is there anything else I can help you with today?"]


@pytest.fixture
def fake_llm(any_model):
    """Every test here holds for both model APIs: Anthropic's Messages and OpenAI's Chat Completions."""
    return any_model


@pytest.fixture
def slow_writer(fake_llm, monkeypatch):
    """A model that writes three sentences, half a second apart."""
    monkeypatch.setattr(fake_llm, "sentences", 3)
    monkeypatch.setattr(fake_llm, "sentence_gap", 0.5)
    return fake_llm


def history_of(app, call_id):
    conversation = runtime_of(app).conversations["voipbin"]
    return conversation.store.peek(conversation.key(call_id))["messages"]


def test_each_sentence_is_said_as_soon_as_the_model_has_written_it(make_voipbin_app, voipbin, slow_writer):
    app = make_voipbin_app()
    client = app.test_client()
    call_id = answer(client, voipbin)
    response = speak(client, voipbin, call_id, "mk1 please")
    answered = time.perf_counter()
    assert response.get_json() == {"status": "said"}
    assert voipbin.said[call_id][1:] == SENTENCES  # after the greeting, one say per sentence
    # The first was said while the model still had a second of writing to do.
    assert answered - voipbin.said_at[call_id][1] >= 0.9
    assert "llm-first;dur=" in response.headers["Server-Timing"]
    assert history_of(app, call_id)[-1] == {"role": "assistant", "content": " ".join(SENTENCES)}
    assert slow_writer.requests[-1]["stream"] is True


def test_with_streaming_off_the_whole_reply_is_one_say(make_voipbin_app, voipbin, slow_writer):
    client = make_voipbin_app(VOIPBIN_STREAM_REPLIES=False).test_client()
    call_id = answer(client, voipbin)
    assert speak(client, voipbin, call_id, "mk1").get_json() == {"status": "said"}
    assert voipbin.said[call_id][1:] == [" ".join(SENTENCES)]
    assert "stream" not in slow_writer.requests[-1]


def test_barge_in_stops_the_stream_and_only_what_was_said_is_recorded(make_voipbin_app, voipbin, slow_writer):
    app = make_voipbin_app()
    call_id = answer(app.test_client(), voipbin)
    answers = []
    turn = threading.Thread(target=lambda: answers.append(speak(app.test_client(), voipbin, call_id, "mk1")))
    turn.start()
    wait_for(lambda: len(voipbin.said[call_id]) >= 2, what="the first sentence said")
    talked = post_event(app.test_client(), "transcribe_speech_started",
                        speech_event_data(voipbin.transcribe_of(call_id)))
    assert talked.status_code == 200
    turn.join(10)
    assert answers[0].get_json() == {"status": "said"}
    assert voipbin.said[call_id][1:] == SENTENCES[:1]  # nothing more after the caller started talking
    assert voipbin.flushed  # and what was queued went
    assert history_of(app, call_id)[-1] == {"role": "assistant", "content": SENTENCES[0]}


def test_a_model_that_dies_mid_reply_leaves_what_was_said_said_and_recorded(make_voipbin_app, voipbin, slow_writer,
                                                                            monkeypatch):
    monkeypatch.setattr(slow_writer, "break_after", 1)
    app = make_voipbin_app()
    client = app.test_client()
    call_id = answer(client, voipbin)
    assert speak(client, voipbin, call_id, "mk1").get_json() == {"status": "said"}
    assert voipbin.said[call_id][1:] == SENTENCES[:1]  # no fallback line after it
    assert history_of(app, call_id)[-1] == {"role": "assistant", "content": SENTENCES[0]}
    assert speak(client, voipbin, call_id, "mk2").get_json() == {"status": "said"}
    assert voipbin.said[call_id][2] == "Heard mk1 mk2."  # the call goes on


def test_a_model_that_fails_before_a_word_gives_the_fallback(make_voipbin_app, voipbin, fake_llm, monkeypatch):
    monkeypatch.setattr(fake_llm, "fail_rate", 1.0)
    app = make_voipbin_app()
    client = app.test_client()
    call_id = answer(client, voipbin)
    assert speak(client, voipbin, call_id, "mk1").get_json() == {"status": "said"}
    assert voipbin.said[call_id][1:] == [app.config["FALLBACK_REPLY"]]


def test_a_first_say_refused_for_now_fails_the_turn_for_its_redelivery(make_voipbin_app, voipbin, slow_writer):
    client = make_voipbin_app().test_client()
    call_id = answer(client, voipbin)
    voipbin.retry_after = 30
    voipbin.rate_limit_next["say"] = 1
    first = speak(client, voipbin, call_id, "mk1", transcript_id="t-1")
    assert first.status_code == 503  # nothing was heard: VoIPBin sends the transcript again
    assert speak(client, voipbin, call_id, "mk1", transcript_id="t-1").get_json() == {"status": "said"}
    assert voipbin.said[call_id][1:] == SENTENCES  # each sentence once


def test_a_model_that_stalls_mid_reply_is_cut_off_at_the_deadline(make_voipbin_app, voipbin, slow_writer,
                                                                  monkeypatch):
    monkeypatch.setattr(slow_writer, "sentence_gap", 5.0)  # the second sentence would come long past the deadline
    app = make_voipbin_app(LLM_TIMEOUT_SECONDS=1.0)
    client = app.test_client()
    call_id = answer(client, voipbin)
    started = time.monotonic()
    assert speak(client, voipbin, call_id, "mk1").get_json() == {"status": "said"}
    assert time.monotonic() - started < 1.0 + 1.0
    assert voipbin.said[call_id][1:] == SENTENCES[:1]  # what was said stays said, and no fallback after it
    assert history_of(app, call_id)[-1] == {"role": "assistant", "content": SENTENCES[0]}

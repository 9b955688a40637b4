"""When the model fails or is slow, the caller still hears something and the history stays valid."""

from __future__ import annotations

import logging
import time

import pytest

from voicebot_testing.fake_llm import MARKER
from voicebot.llm import Reply
from voicebot.llm.anthropic import AnthropicLLM
from voicebot.exceptions import LLMRejected, LLMTimeout, LLMUnavailable
from voicebot.runtime import runtime_of

from .support import free_port

FALLBACK = "Sorry, I'm having trouble right now. Could you say that again?"


def say(client, text, call_id="c"):
    response = client.post("/webhook/transcript", json={"call_id": call_id, "transcript": text})
    assert response.status_code == 200, response.get_json()
    return response.get_json()["response"]


def test_overloaded_model_gives_the_fallback_and_history_stays_valid(client, fake_llm, caplog):
    assert say(client, "mk1") == "Heard mk1."
    fake_llm.fail_rate = 1.0
    with caplog.at_level(logging.WARNING, logger="voicebot"):
        assert say(client, "mk2") == FALLBACK
    assert "call_id=c" in caplog.text and "LLMUnavailable" in caplog.text
    fake_llm.fail_rate = 0.0
    # The strict fake rejects a malformed history, so this also proves the roles still alternate.
    assert MARKER.findall(say(client, "mk3")) == ["mk1", "mk2", "mk3"]
    roles = [m["role"] for m in fake_llm.requests[-1]["messages"]]
    assert roles == ["user", "assistant"] * 2 + ["user"]
    assert fake_llm.requests[-1]["messages"][3]["content"] == FALLBACK


def test_a_hanging_model_is_cut_off_at_the_deadline(make_app, fake_llm):
    client = make_app(LLM_TIMEOUT_SECONDS=0.3, FALLBACK_REPLY="One moment please.").test_client()
    fake_llm.hang_rate = 1.0
    started = time.monotonic()
    assert say(client, "mk1") == "One moment please."
    assert time.monotonic() - started < 5  # 0.3 s deadline; generous for a slow machine
    fake_llm.hang_rate = 0.0
    assert MARKER.findall(say(client, "mk2")) == ["mk1", "mk2"]


def test_an_unreachable_model_gives_the_fallback(make_app):
    client = make_app(ANTHROPIC_BASE_URL=f"http://127.0.0.1:{free_port()}").test_client()
    assert say(client, "hello") == FALLBACK


def test_a_model_that_says_nothing_speakable_gives_the_fallback(make_app, monkeypatch):
    app = make_app()
    llm = runtime_of(app).conversations["article"].llm
    monkeypatch.setattr(llm, "reply", lambda *a, **k: Reply("*** 🙂 https://x.io"))
    assert say(app.test_client(), "hello") == FALLBACK


@pytest.mark.parametrize("setup, error", [
    ({"fail_rate": 1.0}, LLMUnavailable),
    ({"hang_rate": 1.0}, LLMTimeout),
])
def test_sdk_errors_map_to_ours(fake_llm, setup, error):
    for name, value in setup.items():
        setattr(fake_llm, name, value)
    llm = AnthropicLLM(api_key=fake_llm.api_key, model="claude-haiku-5-5", max_tokens=50, base_url=fake_llm.url)
    with pytest.raises(error):
        llm.reply("system", [{"role": "user", "content": "hi"}], timeout=0.3)
    llm.close()


def test_a_rejected_request_maps_to_llm_rejected(fake_llm):
    llm = AnthropicLLM(api_key="wrong-key", model="claude-haiku-5-5", max_tokens=50, base_url=fake_llm.url)
    with pytest.raises(LLMRejected, match="401"):
        llm.reply("system", [{"role": "user", "content": "hi"}], timeout=2)
    llm.close()


def test_transcripts_are_logged_only_at_debug_and_the_key_never(make_app, fake_llm, caplog):
    client = make_app(ANTHROPIC_API_KEY=fake_llm.api_key).test_client()
    secret_words = "my card number is mk4242"
    with caplog.at_level(logging.INFO, logger="voicebot"):
        say(client, secret_words)
    assert "call_id=c" in caplog.text
    assert "mk4242" not in caplog.text
    caplog.clear()
    debug_client = make_app(ANTHROPIC_API_KEY=fake_llm.api_key, LOG_LEVEL="DEBUG").test_client()
    with caplog.at_level(logging.DEBUG):
        say(debug_client, secret_words)
    assert "mk4242" in caplog.text
    assert fake_llm.api_key not in caplog.text

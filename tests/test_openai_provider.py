"""Any model behind an OpenAI-compatible Chat Completions server (LLM_PROVIDER=openai), against a strict fake.

The shared behaviour runs for both providers where it is tested already (the article's contract, VoIPBin's
streaming, operator tools: those modules take ``any_model``); here is what is the provider's own: the
Procfile on it, its tool turns as the API requires them, its errors, its settings and its check.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from voicebot.cli import main
from voicebot.exceptions import ConfigError
from voicebot.llm.openai import chat_messages
from voicebot.platforms import load_config
from voicebot.runtime import runtime_of
from voicebot_testing.fake_llm import MARKER
from voicebot_testing.fake_openai import BadRequest, validate

from .conftest import model_settings
from .support import Gunicorn, procfile_command, wait_for

TOKEN = "openai-drill-token"
HUMANS = "+15550009999"


@pytest.fixture
def fake_llm(fake_openai):
    """make_app's model, here always the Chat Completions fake."""
    return fake_openai


def turn(client, call_id: str, text: str) -> dict:
    answer = client.post("/webhook/transcript", json={"call_id": call_id, "transcript": text})
    assert answer.status_code == 200, answer.get_json()
    return answer.get_json()


def test_the_procfile_on_openai_keeps_every_calls_history_across_two_workers(fake_openai, redis_url, redis_prefix,
                                                                             tmp_path):
    """20 concurrent calls of four turns over two workers and Redis; a goodbye ends a call, a request for a
    person hands it to TRANSFER_NUMBER; only LLM_MODEL is asked for, and the fake refused nothing."""
    server = Gunicorn({"REDIS_URL": redis_url, "REDIS_PREFIX": redis_prefix, "WEB_CONCURRENCY": "2",
                       "WEBHOOK_TOKEN": TOKEN, "TRANSFER_NUMBER": HUMANS, **model_settings(fake_openai)},
                      command=procfile_command())
    server.start(tmp_path / "procfile.log")
    auth = {"Authorization": f"Bearer {TOKEN}"}

    def call(n: int) -> list[dict]:
        call_id = f"oa-{n}"
        answers = []
        with requests.Session() as http:
            http.post(f"{server.url}/webhook/call-started", json={"call_id": call_id}, headers=auth, timeout=15)
            last = "a human please" if n % 2 else "thanks, goodbye"
            for t, words in enumerate([f"c{n} mk{n}a", f"mk{n}b", f"mk{n}c", f"{last} mk{n}d"]):
                answer = http.post(f"{server.url}/webhook/transcript",
                                   json={"call_id": call_id, "event_id": f"{call_id}-{t}", "transcript": words},
                                   headers=auth, timeout=15)
                assert answer.status_code == 200, answer.text
                answers.append(answer.json())
        return answers

    try:
        with ThreadPoolExecutor(20) as pool:
            calls = list(pool.map(call, range(20)))
    finally:
        server.stop()
    for n, answers in enumerate(calls):
        mine = [f"mk{n}{x}" for x in "abcd"]
        for t, answer in enumerate(answers):
            assert MARKER.findall(answer["response"]) == mine[:t + 1], answer  # its own history, whole
        assert answers[-1]["action"] == ({"type": "transfer", "to": HUMANS} if n % 2 else {"type": "hangup"})
    assert fake_openai.refused == []
    assert {r["model"] for r in fake_openai.requests} == {"test-model"}


def test_a_tool_round_is_sent_back_as_the_api_requires_it(make_app, fake_openai, tmp_path):
    """The strict fake answers 400 to a tool message that answers no call, or a call left unanswered."""
    from .support import ToolServer

    tool = ToolServer("tool-secret")
    try:
        app = make_app(TOOLS_FILE=tool.tools_file(tmp_path / "tools.json"), TOOLS_SECRET="tool-secret",
                       TOOLS_ALLOW_LOOPBACK=True)
        client = app.test_client()
        reply = turn(client, "t", "where is order 1001 tool:lookup_order mk1")["response"]
        assert reply.startswith("Let me check. Heard mk1. The tool said: ")
        assert turn(client, "t", "thanks mk2")["response"].startswith("Heard mk1 mk2.")
    finally:
        tool.stop()
    sent = fake_openai.requests[-1]["messages"]
    roles = [m["role"] for m in sent]
    assert roles == ["system", "user", "assistant", "tool", "assistant", "user"]
    assert sent[2]["tool_calls"][0]["id"] == sent[3]["tool_call_id"]
    assert fake_openai.refused == []


def test_the_history_voicebot_keeps_translates_to_a_valid_request_and_a_broken_one_is_refused():
    history = [
        {"role": "user", "content": "where is my order mk1"},
        {"role": "assistant", "content": [{"type": "text", "text": "Let me check."},
                                          {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": 1}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "shipped"}]},
        {"role": "assistant", "content": "It shipped."},
        {"role": "user", "content": "thanks mk2"},
    ]
    chat = chat_messages("Be brief.", history)
    validate({"model": "m", "messages": chat})  # what OpenAI takes
    assert chat[2]["tool_calls"][0]["function"] == {"name": "lookup", "arguments": '{"q": 1}'}
    assert chat[3] == {"role": "tool", "tool_call_id": "toolu_1", "content": "shipped"}
    with pytest.raises(BadRequest, match="did not have response messages: toolu_1"):
        validate({"model": "m", "messages": chat[:3] + chat[4:]})
    with pytest.raises(BadRequest, match="must be a response to a preceeding message"):
        validate({"model": "m", "messages": [chat[0], chat[1], chat[3]]})


def test_a_rate_limited_request_is_asked_again_within_the_deadline(make_app, fake_openai):
    app = make_app(LLM_TIMEOUT_SECONDS=4.0)
    fake_openai.fail_next = [429]
    assert turn(app.test_client(), "r", "hello mk1")["response"] == "Heard mk1."
    assert len(fake_openai.requests) == 2  # once refused (Retry-After: 1), once answered


def test_a_server_that_keeps_failing_gives_the_fallback_and_a_rejected_key_turns_readyz_red(make_app, fake_openai):
    app = make_app(LLM_TIMEOUT_SECONDS=2.0)
    client = app.test_client()
    fake_openai.fail_next = [500, 500]
    assert turn(client, "f", "hello mk1")["response"] == app.config["FALLBACK_REPLY"]
    wrong = make_app(OPENAI_API_KEY="not-the-key")
    assert turn(wrong.test_client(), "k", "hello mk1")["response"] == wrong.config["FALLBACK_REPLY"]
    assert wrong.test_client().get("/readyz").status_code == 503


def test_tokens_are_counted_in_records(make_app, fake_openai):
    app = make_app()
    client = app.test_client()
    turn(client, "u", "hello mk1")
    client.post("/webhook/transcript", json={"type": "call.ended", "call_id": "u"})
    (record,) = runtime_of(app).records.export(0)
    assert record["usage"]["input"] > 0 and record["usage"]["output"] > 0


def test_the_analysis_is_asked_as_a_forced_function_call(make_app, fake_openai, tmp_path):
    from voicebot import background

    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"summary": True, "success": {"scale": "pass_fail", "criteria": "Polite."}}))
    app = make_app(ANALYSIS_FILE=str(plan))
    background.start(app)
    try:
        client = app.test_client()
        turn(client, "a", "where is my order mk1")
        client.post("/webhook/transcript", json={"type": "call.ended", "call_id": "a"})
        record = wait_for(lambda: next(iter(runtime_of(app).records.export(0)), None), timeout=20,
                          what="the analysed record")
    finally:
        background.stop(app)
    assert record["analysis"] == {"summary": "Summary: Heard mk1.", "success": True}
    forced = [r for r in fake_openai.requests if isinstance(r.get("tool_choice"), dict)]
    assert forced[0]["tool_choice"] == {"type": "function", "function": {"name": "record_call_analysis"}}


def test_openai_needs_a_model_name_and_a_usable_base_url():
    with pytest.raises(ConfigError, match="LLM_PROVIDER=openai needs LLM_MODEL"):
        load_config({"LLM_PROVIDER": "openai"})
    with pytest.raises(ConfigError, match="LLM_PROVIDER"):
        load_config({"LLM_PROVIDER": "gemini"})
    with pytest.raises(ConfigError, match="OPENAI_BASE_URL"):
        load_config({"LLM_PROVIDER": "openai", "LLM_MODEL": "m", "OPENAI_BASE_URL": "localhost:11434/v1"})


def test_check_config_connect_asks_the_servers_model_list_and_spends_nothing(fake_openai, monkeypatch, capsys):
    for name, value in model_settings(fake_openai).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("REDIS_URL", "")
    assert main(["serve", "--check-config", "--connect"]) == 0
    out = capsys.readouterr().out
    assert "ok     model test-model at " in out and "no tokens spent" in out and fake_openai.api_key not in out
    assert fake_openai.requests == []
    monkeypatch.setenv("LLM_MODEL", "no-such-model")
    assert main(["serve", "--check-config", "--connect"]) == 1
    assert "lists no such model (it lists test-model)" in capsys.readouterr().out
    monkeypatch.setenv("OPENAI_API_KEY", "wrong")
    assert main(["serve", "--check-config", "--connect"]) == 1
    assert "rejected OPENAI_API_KEY (401)" in capsys.readouterr().out

"""The operator's own tools: declared in TOOLS_FILE, called over HTTP mid-call, answered to the model."""

from __future__ import annotations

import json
import logging
import time

import pytest

from voicebot import create_app
from voicebot.exceptions import ConfigError
from voicebot.llm import Reply, ToolUse
from voicebot.operator_tools import load_tools
from voicebot.egress import AddressPolicy
from voicebot_testing.fake_voipbin import transcript_event_data
from voicebot.runtime import runtime_of

from .conftest import app_config
from .support import ToolServer
from .test_voipbin import FETCH_TOKEN, OUR_NUMBER, SECRET, post_event

TOOL_SECRET = "tool-secret"


@pytest.fixture
def fake_llm(any_model):
    """Every test here holds for both model APIs: Anthropic's Messages and OpenAI's Chat Completions."""
    return any_model


@pytest.fixture
def tool():
    server = ToolServer(TOOL_SECRET)
    yield server
    server.stop()


@pytest.fixture
def tool_app(make_app, tool, tmp_path):
    def make(**overrides):
        return make_app(**{"TOOLS_FILE": tool.tools_file(tmp_path / "tools.json"), "TOOLS_SECRET": TOOL_SECRET,
                           "TOOLS_ALLOW_LOOPBACK": True, **overrides})
    return make


def turn(client, call_id, text):
    response = client.post("/webhook/transcript", json={"call_id": call_id, "transcript": text})
    assert response.status_code == 200, response.get_json()
    return response.get_json()["response"]


def test_a_tool_answer_reaches_the_model_and_the_caller(tool_app, tool, fake_llm):
    app = tool_app()
    client = app.test_client()
    client.post("/webhook/call-started", json={"call_id": "c", "caller_num": "+15551230000"})
    reply = turn(client, "c", "where is order 1001 tool:lookup_order mk1")
    # The model's words before the lookup, then its answer with the tool's (read out as speech).
    assert reply.startswith("Let me check. Heard mk1. The tool said: ")
    assert '"echo": "where is order 1001' in reply
    (call,) = tool.calls
    assert call["call_id"] == "c" and call["platform"] == "article" and call["caller"] == "+15551230000"
    # The id the model gave the call (Anthropic's toolu_..., OpenAI's call_...) goes to the tool as it is.
    assert call["tool"] == "lookup_order" and call["id"].startswith(("toolu_", "call_")) and tool.bad_signatures == 0
    sent = fake_llm.requests[-1]["messages"]
    if "tool_calls" in sent[-2]:  # Chat Completions: the call, then the tool message that answers it
        assert sent[-2]["tool_calls"][0]["id"] == sent[-1]["tool_call_id"] and sent[-1]["role"] == "tool"
    else:
        assert sent[-2]["content"][-1]["type"] == "tool_use" and sent[-1]["content"][0]["type"] == "tool_result"
    assert turn(client, "c", "thanks mk2").startswith("Heard mk1 mk2.")  # the history stays valid
    client.post("/webhook/transcript", json={"type": "call.ended", "call_id": "c"})
    (record,) = runtime_of(app).records.export(0)
    (tool_line,) = [line for line in record["transcript"] if line["speaker"] == "tool"]
    assert tool_line["tool"] == "lookup_order" and tool_line["is_error"] is False and "echo" in tool_line["text"]


@pytest.mark.parametrize("mode", ["error", "notjson", "hang"])
def test_a_failing_tool_becomes_an_error_result_not_a_lost_turn(tool_app, tool, mode):
    tool.mode = mode
    client = tool_app(LLM_TIMEOUT_SECONDS=2.0).test_client()
    started = time.monotonic()
    reply = turn(client, "c", "tool:lookup_order mk1")
    # The Messages API marks the result is_error; Chat Completions has no such flag, only the words.
    assert reply.startswith(("Let me check. Heard mk1. The tool failed: The lookup order tool",
                             "Let me check. Heard mk1. The tool said: The lookup order tool"))
    assert "could not check this right now" in reply or "did not answer" in reply or "answered" in reply
    assert time.monotonic() - started < 2.0 + 3.0  # the tool's 2 s timeout, and no more than the budget
    assert turn(client, "c", "mk2").startswith("Heard mk1 mk2.")


def test_an_unreachable_tool_becomes_an_error_result(make_app, tmp_path):
    from .support import free_port

    path = tmp_path / "tools.json"
    path.write_text(json.dumps({"tools": [{"name": "lookup_order", "description": "d", "input_schema": {
        "type": "object"}, "url": f"http://127.0.0.1:{free_port()}/x"}]}))
    client = make_app(TOOLS_FILE=str(path), TOOLS_SECRET="s", TOOLS_ALLOW_LOOPBACK=True).test_client()
    assert "could not be reached" in turn(client, "c", "tool:lookup_order mk1")


def test_tool_rounds_are_bounded_and_the_last_must_speak(tool_app, monkeypatch):
    app = tool_app(MAX_TOOL_ROUNDS=2)
    llm = runtime_of(app).conversations["article"].llm
    asked = []

    def always_a_tool(system, messages, timeout, tools=(), allow_tools=True):
        asked.append(allow_tools)
        if allow_tools:
            return Reply("", [ToolUse(f"toolu_{len(asked)}", "lookup_order", {"query": "again"})])
        return Reply("Here is what I found.")

    monkeypatch.setattr(llm, "reply", always_a_tool)
    assert turn(app.test_client(), "c", "mk1") == "Here is what I found."
    assert asked == [True, True, False]


def test_the_tools_answer_is_logged_only_at_debug(tool_app, caplog):
    client = tool_app().test_client()
    with caplog.at_level(logging.INFO, logger="voicebot"):
        turn(client, "c", "secret order 4242 tool:lookup_order")
    assert "4242" not in caplog.text


@pytest.mark.parametrize("tools, words", [
    ({"tools": [{"name": "bad name!", "description": "d", "input_schema": {"type": "object"},
                 "url": "https://x.example.com"}]}, "name must be"),
    ({"tools": [{"name": "t", "input_schema": {"type": "object"}, "url": "https://x.example.com"}]},
     "description is missing"),
    ({"tools": [{"name": "t", "description": "d", "input_schema": {"type": "string"},
                 "url": "https://x.example.com"}]}, "input_schema must be"),
    ({"tools": [{"name": "t", "description": "d", "input_schema": {"type": "object"},
                 "url": "http://tools.example.com/x"}]}, "must be https://"),
    ({"tools": [{"name": "t", "description": "d", "input_schema": {"type": "object"},
                 "url": "http://127.0.0.1:9/x"}]}, "TOOLS_ALLOW_LOOPBACK=1"),
    # Not public: refused on the URL's text already (a name is checked at each connection).
    ({"tools": [{"name": "t", "description": "d", "input_schema": {"type": "object"},
                 "url": "https://127.0.0.1/x"}]}, "TOOLS_ALLOW_LOOPBACK=1"),
    ({"tools": [{"name": "t", "description": "d", "input_schema": {"type": "object"},
                 "url": "https://[::ffff:127.0.0.1]/x"}]}, "TOOLS_ALLOW_LOOPBACK=1"),
    ({"tools": [{"name": "t", "description": "d", "input_schema": {"type": "object"},
                 "url": "https://169.254.169.254/latest/meta-data"}]}, "not a public address"),
    ({"tools": [{"name": "t", "description": "d", "input_schema": {"type": "object"},
                 "url": "https://10.1.2.3/x"}]}, "TOOLS_ALLOW_NETWORKS"),
    ({"tools": [{"name": "end_call", "description": "d", "input_schema": {"type": "object"},
                 "url": "https://x.example.com"}]}, "the name is taken"),
    ({"tools": [{"name": "t", "description": "d", "input_schema": {"type": "object"},
                 "url": "https://x.example.com", "timeout_seconds": 60}]}, "timeout_seconds must be"),
    ({"tool": []}, '{"tools": [...]}'),
])
def test_a_bad_tools_file_is_refused_with_a_line_per_mistake(tmp_path, tools, words):
    path = tmp_path / "tools.json"
    path.write_text(json.dumps(tools))
    with pytest.raises(ConfigError, match=None) as info:
        load_tools(str(path), AddressPolicy())
    assert words in str(info.value)


def test_every_mistake_is_listed_and_check_config_says_so(tmp_path, monkeypatch, capsys):
    from voicebot.cli import main

    path = tmp_path / "tools.json"
    broken = {"name": "ok", "description": "d", "input_schema": {"type": "object"}, "url": "ftp://x"}
    path.write_text(json.dumps({"tools": [{"name": "a b"}, broken]}))
    monkeypatch.setenv("TOOLS_FILE", str(path))
    monkeypatch.setenv("TOOLS_SECRET", "s")
    assert main(["serve", "--check-config"]) == 2
    err = capsys.readouterr().err
    assert "'a b': name must be" in err and "'a b': description is missing" in err and "'ok': url must be" in err
    monkeypatch.setenv("TOOLS_FILE", str(tmp_path / "missing.json"))
    assert main(["serve", "--check-config"]) == 2
    assert "cannot be read" in capsys.readouterr().err


def test_tools_need_a_secret(fake_llm, tool, tmp_path):
    with pytest.raises(ConfigError, match="TOOLS_SECRET"):
        create_app(app_config(fake_llm, TOOLS_FILE=tool.tools_file(tmp_path / "t.json"), TOOLS_ALLOW_LOOPBACK=True))


def said_on_voipbin(tool_app, voipbin, words: str) -> list[str]:
    """What a VoIPBin call heard after the caller said ``words``."""
    client = tool_app(VOIPBIN_WEBHOOK_SECRET=SECRET, VOIPBIN_ACCESS_KEY=voipbin.access_key,
                      VOIPBIN_API_URL=voipbin.api_url, VOIPBIN_NUMBERS=(OUR_NUMBER,),
                      VOIPBIN_FETCH_TOKEN=FETCH_TOKEN, VOIPBIN_TIMEOUT_SECONDS=1.0).test_client()
    call_id = voipbin.answer_call()
    post_event(client, "call_progressing", voipbin.calls[call_id])
    data = transcript_event_data(voipbin.transcribe_of(call_id), words)
    assert post_event(client, "transcript_created", data).get_json() == {"status": "said"}
    return voipbin.said[call_id]


def test_on_voipbin_a_slow_tools_filler_is_said_first(tool_app, tool, voipbin):
    tool.mode, tool.delay = "slow", 1.5
    greeting, words, filler, *reply = said_on_voipbin(tool_app, voipbin, "order 1001 tool:lookup_order mk1")
    assert (words, filler) == ("Let me check.", "One moment while I check that.")  # heard at once
    assert " ".join(reply).startswith("Heard mk1. The tool said: ")  # streamed: one say per sentence or two


def test_on_voipbin_a_quick_tool_has_no_filler(tool_app, tool, voipbin):
    said = said_on_voipbin(tool_app, voipbin, "tool:lookup_order mk1")
    assert said[1:2] == ["Let me check."] and "One moment while I check that." not in said  # no filler


def test_a_name_that_takes_long_to_look_up_is_cut_off_at_the_deadline(monkeypatch):
    import socket
    import threading

    from voicebot.deadline import within
    from voicebot.egress import HTTP, EgressTimeout

    released = threading.Event()
    real = socket.getaddrinfo

    def slow_lookup(host, *args, **kwargs):
        if host == "slow-dns.example":
            released.wait(10)  # a resolver that does not answer
        return real("127.0.0.1", *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow_lookup)
    http = HTTP(policy=AddressPolicy())  # the operator's endpoints: voicebot looks the name up, to check it
    started = time.monotonic()
    try:
        with pytest.raises(EgressTimeout), within(0.5):
            http.request("POST", "http://slow-dns.example:9/tool", body=b"{}", limit=100)
        assert time.monotonic() - started < 1.5
    finally:
        released.set()
        http.close()

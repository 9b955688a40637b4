"""Caller context at a call's start (CONTEXT_URL), and post-call analysis in every record (ANALYSIS_FILE)."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import time

import pytest
import requests

from voicebot import create_app
from voicebot.cli import main as cli_main
from voicebot.exceptions import ConfigError
from voicebot.platforms import load_config
from voicebot import background
from voicebot.records.outbox import build_outbox
from voicebot.runtime import runtime_of

from .conftest import app_config
from .support import ContextServer, RecordReceiver, ToolServer, pid_of_connection, wait_for
from .test_twilio import PUBLIC, TOKEN as TWILIO_TOKEN, Call
from .test_voipbin import answer, post_event

CONTEXT_SECRET = "context-secret"
RECORD_SECRET = "record-secret"
GREETING = "Hello {{name|there}}, are you calling about {{topic|your account}}?"
PROMPT = "You help {{name|callers}} of Example Co. Be brief."
ANA = {"variables": {"name": "Ana", "topic": "your order from Tuesday"},
       "instructions": "Ana has one open order, 1001, shipped Tuesday."}


@pytest.fixture
def context():
    server = ContextServer(CONTEXT_SECRET, ANA)
    yield server
    server.stop()


def context_settings(context: ContextServer, **more) -> dict:
    return {"CONTEXT_URL": context.url, "CONTEXT_SECRET": CONTEXT_SECRET, "TOOLS_ALLOW_LOOPBACK": True,
            "GREETING": GREETING, "SYSTEM_PROMPT": PROMPT, **more}


def start(client, call_id: str, caller: str = "+15551230000") -> dict:
    response = client.post("/webhook/call-started", json={"call_id": call_id, "caller_num": caller})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def say(client, call_id: str, text: str, **more) -> dict:
    response = client.post("/webhook/transcript", json={"call_id": call_id, "transcript": text, **more})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def end(client, call_id: str) -> None:
    assert client.post("/webhook/transcript", json={"type": "call.ended", "call_id": call_id}).status_code == 200


# -- caller context ------------------------------------------------------------------------------

def test_the_greeting_and_the_prompt_know_the_caller(make_app, context, fake_llm):
    app = make_app(**context_settings(context))
    client = app.test_client()
    assert start(client, "ctx-1")["greeting"] == "Hello Ana, are you calling about your order from Tuesday?"
    say(client, "ctx-1", "yes mk1")
    system = fake_llm.requests[-1]["system"]
    text = system if isinstance(system, str) else " ".join(b["text"] for b in system)
    assert "You help Ana of Example Co." in text and ANA["instructions"] in text
    assert 'You opened this call by saying: "Hello Ana, are you calling about your order from Tuesday?"' in text
    (ask,) = context.asks
    assert ask == {"call_id": "ctx-1", "platform": "article", "caller": "+15551230000", "called": None,
                   "direction": "inbound", "variables": {}}
    assert context.bad_signatures == 0
    end(client, "ctx-1")
    (record,) = list(runtime_of(app).records.export(0))
    assert record["context"]["variables"] == ANA["variables"] and record["context"]["error"] is None
    assert record["transcript"][0]["text"] == "Hello Ana, are you calling about your order from Tuesday?"


def test_the_context_is_asked_once_per_call_however_often_its_start_comes(make_app, context, fake_llm):
    app = make_app(**context_settings(context))
    client = app.test_client()
    for _ in range(3):  # the platform sends call-started again
        assert start(client, "ctx-once")["greeting"].startswith("Hello Ana")
    say(client, "ctx-once", "mk1")
    say(client, "ctx-once", "mk2")
    assert len(context.asks) == 1


def test_across_workers_the_context_is_asked_once(fake_llm, context, redis_url, redis_prefix):
    """Two workers (two apps on one Redis): the start goes to one, its redelivery and the turns to the other."""
    settings = app_config(fake_llm, REDIS_URL=redis_url, REDIS_PREFIX=redis_prefix, **context_settings(context))
    first, second = create_app(settings).test_client(), create_app(settings).test_client()
    start(first, "ctx-workers")
    assert start(second, "ctx-workers")["greeting"].startswith("Hello Ana")
    assert say(second, "ctx-workers", "mk1")["response"] == "Heard mk1."
    assert len(context.asks) == 1


def test_a_call_whose_first_event_is_a_turn_asks_too(make_app, context, fake_llm):
    app = make_app(**context_settings(context))
    client = app.test_client()
    say(client, "ctx-turn-first", "mk1")
    say(client, "ctx-turn-first", "mk2")
    assert len(context.asks) == 1
    assert "You help Ana" in json.dumps(fake_llm.requests[-1]["system"])


@pytest.mark.parametrize("mode, answer, why", [
    ("slow", ANA, "no answer within 0.5 s"),
    ("error", ANA, "answered HTTP 500"),
    ("notjson", ANA, "not JSON"),
    ("redirect", ANA, "redirect (HTTP 307), which is not followed"),
    ("ok", {"variables": ["Ana"]}, "variables must be an object"),
    ("ok", {"variables": {"name": {"first": "Ana"}}}, "variables.name must be text or a number"),
    ("ok", {"variables": {"name": "{{topic}}"}}, "may not hold"),
    ("ok", {"instructions": 7}, "instructions must be text"),
])
def test_a_slow_failing_or_malformed_context_greets_with_the_defaults(make_app, context, fake_llm, caplog, mode,
                                                                      answer, why):
    context.mode, context.answer_with, context.delay = mode, answer, 3.0
    app = make_app(**context_settings(context, CONTEXT_TIMEOUT_SECONDS=0.5))
    client = app.test_client()
    began = time.monotonic()
    assert start(client, "ctx-bad")["greeting"] == "Hello there, are you calling about your account?"
    assert time.monotonic() - began < 2.0  # the caller was greeted in time
    assert say(client, "ctx-bad", "mk1")["response"] == "Heard mk1."
    assert "You help callers of Example Co." in json.dumps(fake_llm.requests[-1]["system"])
    assert context.elsewhere == 0  # a redirect is never followed
    assert any(why in r.getMessage() and "caller context not used call_id=ctx-bad" in r.getMessage()
               for r in caplog.records)
    end(client, "ctx-bad")
    (record,) = list(runtime_of(app).records.export(0))
    assert why in record["context"]["error"] and record["context"]["variables"] == {}
    assert len(context.asks) == 1  # failed, it is not asked again either


def test_a_placeholder_with_no_default_and_no_value_is_left_out_neatly(make_app, context, fake_llm):
    context.answer_with = {"variables": {"topic": "your order"}}  # no name
    app = make_app(**context_settings(context, GREETING="Hello {{name}}, are you calling about {{topic}}?",
                                      SYSTEM_PROMPT="You help {{name}} of Example Co."))
    client = app.test_client()
    assert start(client, "ctx-bare")["greeting"] == "Hello, are you calling about your order?"
    say(client, "ctx-bare", "mk1")
    assert "You help of Example Co." in json.dumps(fake_llm.requests[-1]["system"])


def test_voipbin_greets_with_the_context_and_fetch_never_waits_for_it(make_voipbin_app, voipbin, context):
    app = make_voipbin_app(**context_settings(context))
    client = app.test_client()
    call_id = answer(client, voipbin)
    assert voipbin.said[call_id][0] == "Hello Ana, are you calling about your order from Tuesday?"
    (ask,) = context.asks
    assert ask["platform"] == "voipbin" and ask["called"] == voipbin.calls[call_id]["destination"]["target"]
    post_event(client, "call_progressing", voipbin.calls[call_id])  # redelivered
    assert len(context.asks) == 1 and len(voipbin.said[call_id]) == 1


def test_twilio_greets_with_the_context(make_app, context):
    app = make_app(TWILIO_AUTH_TOKEN=TWILIO_TOKEN, PUBLIC_URL=PUBLIC, **context_settings(context))
    call = Call(app.test_client())
    call.start()
    assert call.heard() == "Hello Ana, are you calling about your order from Tuesday?"
    (ask,) = context.asks
    assert ask["platform"] == "twilio" and ask["called"] == "+15559870000" and ask["caller"] == "+15551230000"


def test_operator_tools_see_the_calls_variables_and_context(make_app, context, tmp_path):
    tool = ToolServer("tool-secret")
    try:
        app = make_app(**context_settings(context, TOOLS_FILE=tool.tools_file(tmp_path / "tools.json"),
                                          TOOLS_SECRET="tool-secret"))
        client = app.test_client()
        start(client, "ctx-tool")
        say(client, "ctx-tool", "where is my order tool:lookup_order mk1")
        (call,) = tool.calls
        assert call["variables"] == ANA["variables"] and call["context"]["instructions"] == ANA["instructions"]
    finally:
        tool.stop()


@pytest.mark.parametrize("settings, words", [
    ({"GREETING": "Hello {{name|there}}!"}, "GREETING uses {{name}}, and nothing gives an inbound call a value"),
    ({"SYSTEM_PROMPT": "Help {{name}}."}, "SYSTEM_PROMPT uses {{name}}, and nothing gives"),
    ({"CONTEXT_URL": "http://context.example.com/ask", "CONTEXT_SECRET": "s"}, "CONTEXT_URL must be https://"),
    ({"CONTEXT_URL": "https://127.0.0.1/ask", "CONTEXT_SECRET": "s"}, "CONTEXT_URL is on loopback"),
    ({"CONTEXT_URL": "https://context.example.com/ask"}, "CONTEXT_URL needs CONTEXT_SECRET"),
    ({"CONTEXT_URL": "https://context.example.com/ask", "CONTEXT_SECRET": "s", "CONTEXT_TIMEOUT_SECONDS": "9"},
     "CONTEXT_TIMEOUT_SECONDS must be at most 5"),
])
def test_context_settings_that_could_only_fail_mid_call_are_refused(settings, words):
    with pytest.raises(ConfigError, match=words.replace("{", r"\{").replace("}", r"\}")):
        load_config(settings)


# -- post-call analysis --------------------------------------------------------------------------

PLAN = {"summary": True,
        "data": {"type": "object", "properties": {"order_number": {"type": "string"},
                                                  "wants_callback": {"type": "boolean"},
                                                  "items": {"type": "integer", "minimum": 1}},
                 "required": ["order_number", "wants_callback", "items"]},
        "success": {"scale": "pass_fail", "criteria": "The caller learnt where their order is."}}


@pytest.fixture
def plan_file(tmp_path):
    path = tmp_path / "analysis.json"
    path.write_text(json.dumps(PLAN))
    return str(path)


@pytest.fixture
def receiver():
    server = RecordReceiver(RECORD_SECRET)
    yield server
    server.stop()


@pytest.fixture
def analysing_app(make_app, plan_file, receiver):
    started = []

    def make(**more):
        app = make_app(ANALYSIS_FILE=plan_file, ANALYSIS_TIMEOUT_SECONDS=5, CALL_REPORT_URL=receiver.url,
                       CALL_REPORT_SECRET=RECORD_SECRET, TOOLS_ALLOW_LOOPBACK=True, **more)
        background.start(app)
        started.append(app)
        return app

    yield make
    for app in started:
        background.stop(app)


def a_whole_call(client, call_id: str) -> None:
    start(client, call_id)
    say(client, call_id, "where is my order mk1")
    say(client, call_id, "thanks mk2")
    end(client, call_id)


def test_every_record_carries_its_analysis(analysing_app, receiver, fake_llm):
    app = analysing_app()
    a_whole_call(app.test_client(), "an-1")
    record = wait_for(lambda: receiver.by_id() and next(iter(receiver.by_id().values())), timeout=20,
                      what="the analysed record")
    assert record["analysis"] == {"summary": "Summary: Heard mk1 mk2.",
                                  "data": {"order_number": "", "wants_callback": True, "items": 1},
                                  "success": True}
    assert record["analysis_error"] is None
    assert record["usage"]["analysis_output"] > 0 and record["usage"]["analysis_input"] > 0
    forced = [r for r in fake_llm.requests if (r.get("tool_choice") or {}).get("type") == "tool"]
    assert len(forced) == 1 and "Caller: where is my order mk1" in forced[0]["messages"][0]["content"]
    (exported,) = list(runtime_of(app).records.export(0))
    assert exported["analysis"] == record["analysis"]
    assert len(receiver.received) == 1


def test_an_answer_that_does_not_fit_the_schema_is_asked_again_once(analysing_app, receiver, fake_llm):
    fake_llm.misfits = 1
    app = analysing_app()
    a_whole_call(app.test_client(), "an-misfit")
    record = wait_for(lambda: next(iter(receiver.by_id().values()), None), timeout=20, what="the record")
    assert record["analysis"]["success"] is True
    forced = [r for r in fake_llm.requests if (r.get("tool_choice") or {}).get("type") == "tool"]
    assert len(forced) == 2
    refused = forced[1]["system"] if isinstance(forced[1]["system"], str) else forced[1]["system"][0]["text"]
    assert "Your last answer was refused: it does not fit the schema" in refused


@pytest.mark.parametrize("break_it, why", [
    (lambda fake: setattr(fake, "misfits", 2), "does not fit the schema at the answer: 'data' is a required"),
    (lambda fake: setattr(fake, "fail_rate", 1.0), "the model failed: LLMUnavailable"),
])
def test_an_analysis_that_fails_never_holds_the_record_back(analysing_app, receiver, fake_llm, break_it, why):
    app = analysing_app()
    a_whole_call(app.test_client(), "an-fails")  # the turns are answered before the model breaks
    break_it(fake_llm)
    record = wait_for(lambda: next(iter(receiver.by_id().values()), None), timeout=20, what="the record")
    assert record["analysis"] is None and why in record["analysis_error"]
    assert record["transcript"][-1]["text"] == "Heard mk1 mk2."


def test_offline_the_analysis_is_a_plain_summary(make_app, plan_file):
    app = create_app({"ANTHROPIC_API_KEY": "", "ANALYSIS_FILE": plan_file, "LOG_LEVEL": "INFO"})
    background.start(app)
    try:
        client = app.test_client()
        a_whole_call(client, "an-offline")
        record = wait_for(lambda: next(iter(runtime_of(app).records.export(0)), None), timeout=20,
                          what="the analysed record")
    finally:
        background.stop(app)
    assert record["analysis"]["summary"].startswith("A call of 2 caller turn(s), answered offline")
    assert "where is my order mk1 / thanks mk2" in record["analysis"]["summary"]


def test_calls_export_writes_one_csv_row_per_call_with_the_schemas_columns(fake_llm, plan_file, redis_url,
                                                                           redis_prefix, tmp_path, monkeypatch):
    """`voicebot calls export` reads the records Redis keeps (the memory store's stay in the serving process)."""
    app = create_app(app_config(fake_llm, REDIS_URL=redis_url, REDIS_PREFIX=redis_prefix, ANALYSIS_FILE=plan_file))
    background.start(app)
    try:
        client = app.test_client()
        for call_id in ("csv-1", "csv-2"):
            a_whole_call(client, call_id)
        wait_for(lambda: len(list(runtime_of(app).records.export(0))) == 2, timeout=20,
                 what="both analysed records")
    finally:
        background.stop(app)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("REDIS_PREFIX", redis_prefix)
    monkeypatch.setenv("ANALYSIS_FILE", plan_file)
    out = tmp_path / "calls.csv"
    assert cli_main(["calls", "export", "--csv", "--output", str(out)]) == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [r["call_id"] for r in rows] == ["csv-1", "csv-2"]
    assert list(rows[0])[-5:] == ["summary", "success", "order_number", "wants_callback", "items"]
    assert rows[0]["summary"] == "Summary: Heard mk1 mk2." and rows[0]["success"] == "true"
    assert rows[0]["items"] == "1" and rows[0]["wants_callback"] == "true"
    assert cli_main(["calls", "export", "--analysis", "--output", str(tmp_path / "again.csv")]) == 0
    assert (tmp_path / "again.csv").read_text() == out.read_text()


@pytest.mark.parametrize("plan, words", [
    ("[]", "must be a JSON object"),
    ('{"summary": "yes"}', "summary must be true or false"),
    ('{"data": {"type": "string"}}', 'data must be a JSON schema with "type": "object"'),
    ('{"data": {"type": "object", "properties": {"a": {"type": "nonsense"}}}}', "data is not a valid JSON schema"),
    ('{"success": {"scale": "stars", "criteria": "x"}}', "success.scale must be one of"),
    ('{"success": {"scale": "1-10"}}', "success.criteria must say"),
    ('{"summary": false}', "asks for nothing"),
    ('{"summary": true, "sentiment": true}', "'sentiment' is not a part of a plan"),
])
def test_a_bad_analysis_plan_is_refused_at_start(tmp_path, plan, words):
    path = tmp_path / "plan.json"
    path.write_text(plan)
    with pytest.raises(ConfigError, match=words):
        load_config({"ANALYSIS_FILE": str(path)})


def test_a_worker_killed_mid_analysis_leaves_it_to_another_and_one_record(gunicorns, fake_llm, redis_url,
                                                                          redis_prefix, plan_file, receiver):
    server = gunicorns({"REDIS_URL": redis_url, "REDIS_PREFIX": redis_prefix, "ANTHROPIC_API_KEY": fake_llm.api_key,
                        "ANTHROPIC_BASE_URL": fake_llm.url, "WEB_CONCURRENCY": "2", "WEB_THREADS": "8",
                        "CALL_REPORT_URL": receiver.url, "CALL_REPORT_SECRET": RECORD_SECRET,
                        "TOOLS_ALLOW_LOOPBACK": "1", "ANALYSIS_FILE": plan_file, "ANALYSIS_TIMEOUT_SECONDS": "3"})
    with requests.Session() as http:
        for text in ("where is my order mk1", "thanks mk2"):
            assert http.post(server.url + "/webhook/transcript", json={"call_id": "an-killed", "transcript": text},
                             timeout=10).status_code == 200
        fake_llm.latency = 10.0  # the analysis waits on the model: its worker is killed meanwhile
        assert http.post(server.url + "/webhook/transcript", json={"type": "call.ended", "call_id": "an-killed"},
                         timeout=10).status_code == 200

    def analysis_asked():
        return next((i for i, r in enumerate(fake_llm.requests)
                     if (r.get("tool_choice") or {}).get("type") == "tool"), None)

    index = wait_for(lambda: analysis_asked() is not None and analysis_asked(), timeout=20, what="an analysis")
    peer_port = fake_llm.peers[index][1]
    llm_port = int(fake_llm.url.rsplit(":", 1)[1])
    analysing = wait_for(lambda: pid_of_connection(server.workers(), peer_port, llm_port),
                         what="the worker that is analysing")
    os.kill(analysing, signal.SIGKILL)
    killed = time.monotonic()
    fake_llm.latency = 0.0
    record = wait_for(lambda: next(iter(receiver.by_id().values()), None), timeout=40,
                      what="the record, analysed by another worker")
    took = time.monotonic() - killed
    assert record["call_id"] == "an-killed" and record["analysis"]["summary"] == "Summary: Heard mk1 mk2."
    # Kept once: the archive (what `calls export` reads) holds one record of the call, and one was delivered.
    outbox = build_outbox(load_config({}, {"REDIS_URL": redis_url, "REDIS_PREFIX": redis_prefix}))
    try:
        assert [r["call_id"] for r in outbox.export(0)] == ["an-killed"]
    finally:
        outbox.close()
    assert len(receiver.received) == 1
    print(f"\nDRILL analysis-worker-killed: worker {analysing} SIGKILLed mid-analysis; another analysed and "
          f"delivered the record {took:.2f}s later (ANALYSIS_TIMEOUT_SECONDS 3 + 5 s before it is claimed); "
          f"{len(receiver.received)} delivery")


# The second attack: schemas that stalled a worker or held every record back.

def test_a_backtracking_pattern_cannot_stall_the_worker_validating_the_answer(make_app, receiver, tmp_path,
                                                                              fake_llm):
    """The fake model fills the string with 48 x's: Python's re takes hours on ^(x+)+y$ against that, holding
    the GIL (the attack froze other calls' turns for 12.9 s); RE2 answers at once, and the record goes out."""
    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"data": {"type": "object", "required": ["code"], "properties": {
        "code": {"type": "string", "minLength": 48, "pattern": "^(x+)+y$"}}}}))
    app = make_app(ANALYSIS_FILE=str(path), ANALYSIS_TIMEOUT_SECONDS=5, CALL_REPORT_URL=receiver.url,
                   CALL_REPORT_SECRET=RECORD_SECRET, TOOLS_ALLOW_LOOPBACK=True)
    background.start(app)
    try:
        client = app.test_client()
        a_whole_call(client, "an-redos")
        record = wait_for(lambda: next(iter(receiver.by_id().values()), None), timeout=20, what="the record")
        assert record["analysis"] is None and "does not match" in record["analysis_error"]
        assert say(client, "an-other", "still answered mk1")["response"] == "Heard mk1."
    finally:
        background.stop(app)


@pytest.mark.parametrize("data, words", [
    ({"type": "object", "properties": {"a": {"$ref": "https://schemas.example/never-fetched.json"}}},
     "does not resolve inside the schema"),
    ({"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}, "does not resolve inside the schema"),
    ({"type": "object", "properties": {"a": {"type": "string", "pattern": "(?=x)y"}}}, "cannot run in linear time"),
    ({"type": "object", "patternProperties": {"(a)\\1": {"type": "string"}}}, "cannot run in linear time"),
])
def test_a_schema_that_could_only_stall_later_is_refused_at_start(tmp_path, data, words):
    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"data": data}))
    with pytest.raises(ConfigError, match=words):
        load_config({"ANALYSIS_FILE": str(path)})


def test_a_schemas_own_definitions_resolve_where_its_author_meant(tmp_path):
    """"#/$defs/..." inside the data schema means the data schema's own $defs, though it is validated inside the
    tool's schema."""
    from voicebot.records.plan import load_plan
    from voicebot.records.analysis_schema import validator_for

    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"data": {"type": "object", "$defs": {"code": {"type": "string", "pattern": "^A"}},
                                         "properties": {"code": {"$ref": "#/$defs/code"}}}}))
    plan = load_plan(str(path))
    validator = validator_for(plan.tool().input_schema, plan.data)
    assert validator.is_valid({"data": {"code": "A1"}})
    assert not validator.is_valid({"data": {"code": "B1"}})

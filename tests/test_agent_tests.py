"""`voicebot test`: scripted and simulated callers against the agent, in process and against a deployment."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from voicebot.cli import main

from .conftest import model_settings
from .support import ROOT, Gunicorn, procfile_command

EXAMPLE = ROOT / "docs" / "examples" / "agent-tests.yaml"
HUMANS = "+15550009999"
TOKEN = "agent-test-token"


def cases(path) -> list[ET.Element]:
    return list(ET.parse(path).getroot().iter("testcase"))


@pytest.fixture
def offline(monkeypatch):
    """The embedded defaults: the offline responder, with a person to hand calls to."""
    for name in ("ANTHROPIC_API_KEY", "WEBHOOK_TOKEN", "REDIS_URL", "LLM_PROVIDER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TRANSFER_NUMBER", HUMANS)


def test_the_docs_example_fails_exactly_its_failing_scenario_and_passes_without_it(offline, tmp_path, capsys):
    report = tmp_path / "junit.xml"
    assert main(["test", str(EXAMPLE), "--junit", str(report)]) == 1
    out = capsys.readouterr().out
    assert "promises a refund (fails on purpose): says: no reply said 'refund'" in out
    assert "6 passed, 1 failed" in out
    runs = cases(report)
    assert len(runs) == 7  # 4 + 1 + 1 + 1: one test case per run
    failed = [case for case in runs if case.find("failure") is not None or case.find("error") is not None]
    assert [case.get("name") for case in failed] == ["promises a refund (fails on purpose)"]
    assert "no reply said 'refund'" in failed[0].find("failure").get("message")
    assert sum(case.get("name").startswith("hangs up after goodbye (run ") for case in runs) == 4
    passing = tmp_path / "passing.yaml"
    passing.write_text(EXAMPLE.read_text().split("  - name: promises a refund")[0])
    assert main(["test", str(passing)]) == 0


def test_against_a_deployment_of_two_workers_and_redis(fake_llm, redis_url, redis_prefix, tmp_path, monkeypatch,
                                                       capsys):
    server = Gunicorn({"REDIS_URL": redis_url, "REDIS_PREFIX": redis_prefix, "WEB_CONCURRENCY": "2",
                       "WEBHOOK_TOKEN": TOKEN, "TRANSFER_NUMBER": HUMANS, **model_settings(fake_llm)},
                      command=procfile_command()).start(tmp_path / "procfile.log")
    scenarios = {"scenarios": [
        {"name": "keeps the order number", "caller": ["my order mk1234", "thanks, goodbye mk5"], "repeat": 4,
         "expect": {"action": "hangup", "says": ["mk1234"], "never_says": ["refund"], "max_turns": 4,
                    "judge": "The agent confirmed the order number."}},
        {"name": "wants a person", "caller": ["a human please"], "expect": {"action": "transfer"}},
        {"name": "cannot pass", "caller": ["hello mk7"], "expect": {"says": ["mk8"]}},
    ]}
    path = tmp_path / "agent.json"
    path.write_text(json.dumps(scenarios))  # JSON is taken as well as YAML
    monkeypatch.setenv("WEBHOOK_TOKEN", TOKEN)
    try:
        assert main(["test", str(path), "--url", server.url, "--junit", str(tmp_path / "r.xml"),
                     "--concurrency", "3"]) == 1
        runs = cases(tmp_path / "r.xml")
        assert len(runs) == 6
        (failed,) = [case for case in runs if case.find("failure") is not None]
        assert failed.get("name") == "cannot pass" and "'mk8'" in failed.find("failure").get("message")
        scenarios["scenarios"].pop()
        path.write_text(json.dumps(scenarios))
        assert main(["test", str(path), "--url", server.url]) == 0
        monkeypatch.setenv("WEBHOOK_TOKEN", "wrong")  # a deployment that refuses: an error, not a pass
        assert main(["test", str(path), "--url", server.url, "--repeat", "1"]) == 1
        assert "HTTP 401" in capsys.readouterr().out
    finally:
        server.stop()


@pytest.mark.parametrize("document, words", [
    ("scenarios: []", "give 'scenarios'"),
    ("scenarios: [{caller: [hi]}]", "scenario 1: 'name' must be given"),
    ("scenarios: [{name: a, caller: hi}]", "scenario 'a': 'caller' must be a list"),
    ("scenarios: [{name: a}]", "scenario 'a': 'caller' or 'persona' must be given"),
    ("scenarios: [{name: a, caller: [hi], expect: {action: shout}}]", "scenario 'a': 'expect.action' must be one of"),
    ("scenarios: [{name: a, caller: [hi], expect: {sayz: [x]}}]", "scenario 'a': 'expect.sayz' is not an expectation"),
    ("scenarios: [{name: a, caller: [hi], repeat: 0}]", "scenario 'a': 'repeat' must be a whole number"),
    ("scenarios: [{name: a, caller: [hi]}, {name: a, caller: [ho]}]", "scenario 'a': 'name' is given to two"),
    ("scenarios: [{name: a, caller: [hi], persona: x}]", "scenario 'a': 'persona' goes with a simulated caller"),
    ("scenarios: [{name: a", "not YAML or JSON"),
])
def test_a_bad_file_is_one_line_naming_the_scenario_and_field_and_exit_2(document, words, offline, tmp_path,
                                                                         capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(document)
    assert main(["test", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0] and "Traceback" not in err[0]


def test_a_simulated_caller_and_the_judge_are_played_by_the_model(fake_llm, monkeypatch, tmp_path, capsys):
    for name, value in model_settings(fake_llm).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("WEBHOOK_TOKEN", raising=False)
    path = tmp_path / "sim.yaml"
    path.write_text("scenarios:\n  - name: impatient\n    persona: An impatient customer mk3.\n"
                    "    goal: A date.\n    max_turns: 2\n    expect: {judge: The agent stayed polite.}\n")
    assert main(["test", str(path)]) == 0
    judged = [r for r in fake_llm.requests if (r.get("tool_choice") or {}).get("name") == "record_verdict"]
    assert len(judged) == 1 and "Expectation: The agent stayed polite." in judged[0]["messages"][0]["content"]
    played = [r for r in fake_llm.requests if "You play the caller" in str(r.get("system"))]
    assert len(played) == 2  # the caller's two turns, each a model call
    fake_llm.misfits = 1  # the judge answers what is not a verdict: an error, never a pass
    assert main(["test", str(path)]) == 1
    assert "judge: the judge's answer could not be read as a verdict" in capsys.readouterr().out


def test_a_run_whose_model_failed_is_an_error_not_a_pass(fake_llm, monkeypatch, tmp_path, capsys):
    for name, value in model_settings(fake_llm).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("WEBHOOK_TOKEN", raising=False)
    path = tmp_path / "down.yaml"
    path.write_text("scenarios:\n  - name: model down\n    caller: [hello]\n    expect: {never_says: [refund]}\n")
    fake_llm.fail_rate = 1.0
    report = tmp_path / "r.xml"
    assert main(["test", str(path), "--junit", str(report)]) == 1
    (case,) = cases(report)
    assert case.find("error") is not None and "fallback" in case.find("error").get("message")

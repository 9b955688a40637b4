"""Running a scenario: one call on the article's contract, its expectations checked, a model's judgement asked.

A run is a call of its own (its own call id, so runs never share history),
driven through ``Post`` (the app in this process, or a deployment over HTTP,
as ``voicebot chat`` drives them). The caller is the scenario's scripted
lines, or a model playing its persona. The deterministic checks (the action,
what the agent says and never says, the tools it called, the turns it took)
are decided here, never by a model; ``judge`` is asked of a model that sees
the whole transcript and the expectation and must answer a verdict through a
forced tool, or the run is an error. A run whose model call failed (the
fallback line, a non-200 answer) is an error, not a pass.
"""

from __future__ import annotations

import statistics
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from ..exceptions import LLMError
from ..llm import LLM, Message
from ..tools import Tool
from .scenarios import Scenario

# (path, body) -> (status, answer), as voicebot.chat posts the article's contract.
Post = Callable[[str, dict[str, Any]], tuple[int, dict[str, Any]]]

VERDICT = Tool("record_verdict", "Record whether the call met the expectation, and why.", {
    "type": "object", "required": ["passed", "reason"],
    "properties": {"passed": {"type": "boolean", "description": "true: the call met the expectation"},
                   "reason": {"type": "string", "description": "why, in a sentence, naming what was said"}}})
JUDGE_SYSTEM = ("You grade a phone call between a caller and an AI voice agent, from its transcript, against one "
                "expectation. Answer only by using the record_verdict tool.")
CALLER_SYSTEM = ("You play the caller on a phone call with an AI voice agent. Who you are: {persona} What you "
                 "want: {goal} Answer with the caller's next words only, one or two short spoken sentences. When "
                 "you have what you want, or give up, say goodbye.")
MODEL_SECONDS = 20.0


@dataclass
class Run:
    """One run of a scenario: what was said, what failed (each expectation, with the reply at fault)."""

    scenario: str
    number: int
    of: int
    transcript: list[tuple[str, str]] = field(default_factory=list)  # (caller | bot, words)
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # the run could not be graded (a model failed)
    tokens: int = 0  # the test's own model calls: the simulated caller and the judge
    seconds: float = 0.0
    action: str = "none"  # the call's last action: hangup, transfer, or none
    tools: list[str] = field(default_factory=list)  # the operator's tools the agent called, in order

    @property
    def passed(self) -> bool:
        return not self.failures and not self.errors

    @property
    def name(self) -> str:
        return self.scenario if self.of == 1 else f"{self.scenario} (run {self.number} of {self.of})"

    @property
    def median_ms(self) -> float:
        return statistics.median(self.latencies) * 1000 if self.latencies else 0.0


class Tester:
    """Runs scenarios through ``post``; ``caller`` plays simulated callers, ``judge`` grades ``judge`` lines."""

    def __init__(self, post: Callable[[], Post], caller: LLM, judge: LLM) -> None:
        self.post = post
        self.caller = caller
        self.judge = judge

    def run(self, scenario: Scenario, number: int) -> Run:
        started = time.monotonic()
        run = Run(scenario.name, number, scenario.repeat)
        try:
            self._call(scenario, run)
            if not run.errors:
                self._check(scenario, run)
        except LLMError as exc:
            run.errors.append(f"a model the test uses failed: {type(exc).__name__}: {exc}")
        run.seconds = time.monotonic() - started
        return run

    def _call(self, scenario: Scenario, run: Run) -> None:
        post, call_id = self.post(), f"test-{uuid.uuid4().hex[:12]}"
        status, answer = post("/webhook/call-started", {"call_id": call_id, "caller_num": "+15550000000",
                                                        "variables": scenario.variables})
        if status != 200:
            run.errors.append(f"the call did not start: HTTP {status} {answer.get('message', '')}".strip())
            return
        run.transcript.append(("bot", str(answer.get("greeting") or "")))
        lines = iter(scenario.caller)
        ended = False
        for turn in range(1, scenario.max_turns + 1):
            words = next(lines, None) if not scenario.simulated else self._simulated_line(scenario, run)
            if words is None:
                break
            run.transcript.append(("caller", words))
            asked = time.monotonic()
            status, answer = post("/webhook/transcript", {"call_id": call_id, "transcript": words})
            run.latencies.append(time.monotonic() - asked)
            if status != 200:
                run.errors.append(f"turn {turn}: HTTP {status} {answer.get('message', '')}".strip())
                return
            run.transcript.append(("bot", str(answer.get("response") or "")))
            if answer.get("fallback"):
                run.errors.append(f"turn {turn}: the model failed, and the caller heard the fallback line")
                return
            run.tools += [str(tool) for tool in answer.get("tools") or []]
            if isinstance(answer.get("action"), dict):
                run.action = str(answer["action"].get("type", "none"))
                ended = True  # the agent ended the call or handed it on: nothing more is said
                break
        if not ended:
            post("/webhook/transcript", {"type": "call.ended", "call_id": call_id})

    def _simulated_line(self, scenario: Scenario, run: Run) -> str | None:
        # The caller's view: the agent's lines are what it hears (user), its own are what it said (assistant).
        messages: list[Message] = [{"role": "user" if who == "bot" else "assistant", "content": words or "..."}
                                   for who, words in run.transcript]
        system = CALLER_SYSTEM.format(persona=scenario.persona, goal=scenario.goal or "(say what you want)")
        reply = self.caller.reply(system, messages, MODEL_SECONDS)
        run.tokens += sum(reply.usage.values())
        return reply.text.strip() or None

    def _check(self, scenario: Scenario, run: Run) -> None:
        expect = scenario.expect
        replies = [words for who, words in run.transcript if who == "bot"]
        heard = " ".join(replies).lower()
        if expect.action is not None and run.action != expect.action:
            run.failures.append(f"action: expected {expect.action}, the call's last action was {run.action} "
                                f"(last reply: {replies[-1]!r})")
        for words in expect.says:
            if words.lower() not in heard:
                run.failures.append(f"says: no reply said {words!r}")
        for words in expect.never_says:
            said = next((reply for reply in replies if words.lower() in reply.lower()), None)
            if said is not None:
                run.failures.append(f"never_says: a reply said {words!r}: {said!r}")
        for tool in expect.tools:
            if tool not in run.tools:
                run.failures.append(f"tools: {tool} was not called (called: {', '.join(run.tools) or 'none'})")
        turns = len(run.latencies)
        if expect.max_turns is not None and turns > expect.max_turns:
            run.failures.append(f"max_turns: the call took {turns} turns, more than {expect.max_turns}")
        if expect.judge:
            self._judge(expect.judge, run)

    def _judge(self, expectation: str, run: Run) -> None:
        transcript = "\n".join(f"{'Caller' if who == 'caller' else 'Agent'}: {words}" for who, words in run.transcript)
        asked: list[Message] = [{"role": "user", "content": f"Transcript:\n{transcript}\n\nExpectation: {expectation}"}]
        reply = self.judge.reply(JUDGE_SYSTEM, asked, MODEL_SECONDS, [VERDICT], force_tool=VERDICT.name)
        run.tokens += sum(reply.usage.values())
        verdict = next((use.input for use in reply.tool_uses if use.name == VERDICT.name), None)
        if not isinstance(verdict, dict) or not isinstance(verdict.get("passed"), bool):
            run.errors.append("judge: the judge's answer could not be read as a verdict")
            return
        if not verdict["passed"]:
            run.failures.append(f"judge: {expectation!r} not met: {str(verdict.get('reason') or 'no reason given')}")

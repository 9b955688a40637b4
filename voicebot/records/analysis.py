"""Post-call analysis: a summary, the operator's structured data and a verdict, in every end-of-call record.

ANALYSIS_FILE names a plan (JSON, checked at start as TOOLS_FILE is)::

    {"summary": true,
     "data": {"type": "object", "properties": {"order_number": {"type": "string"}}, "required": []},
     "success": {"scale": "pass_fail", "criteria": "The caller learnt where their order is."}}

After a call ends, a record worker (never a webhook) asks the model, through
the same adapter as the calls, to fill one forced tool whose input schema is
the plan; what it gives is checked against that schema and asked again once
if it does not fit. The record then goes out with ``analysis`` (``summary``,
``data``, ``success``), or with ``analysis: null`` and ``analysis_error``
saying why (the model failed twice, time ran out): a record is never lost or
held back by its analysis. Its tokens are in the record's ``usage``
(``analysis_*``) and in /metrics.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from .. import metrics
from ..config import read_json_file
from ..exceptions import ConfigError, LLMError, StoreError
from ..llm import LLM, Message
from ..tools import Tool
from . import analysis_schema
from .outbox import Entry, Outbox

log = logging.getLogger(__name__)

TOOL_NAME = "record_call_analysis"
# What each success scale asks of the model, as JSON schema.
SCALES: dict[str, dict[str, Any]] = {
    "pass_fail": {"type": "boolean", "description": "true: the call met the criteria; false: it did not"},
    "1-10": {"type": "integer", "minimum": 1, "maximum": 10, "description": "1 (not at all) to 10 (fully)"},
    "1-5": {"type": "integer", "minimum": 1, "maximum": 5, "description": "1 (not at all) to 5 (fully)"},
    "likert": {"type": "string", "enum": ["strongly disagree", "disagree", "neutral", "agree", "strongly agree"],
               "description": "how far the call met the criteria"},
}
# Model answers asked for one record: the first, and one more when it did not fit the schema or failed.
ASKS = 2
# Workers that started a record's analysis and did not finish it (killed mid-way): past this it goes without.
MAX_STARTS = 3
SYSTEM = ("You analyse phone calls between a caller and an AI voice agent, from their transcript. "
          "Answer only by using the {tool} tool, and fill its fields from what the transcript shows; "
          "where it does not show something, say so rather than guess.")


@dataclass(frozen=True)
class AnalysisPlan:
    """What each record's analysis holds, as ANALYSIS_FILE declares it."""

    summary: bool
    data: dict[str, Any] | None  # a JSON schema of an object, written by the operator
    scale: str | None  # one of SCALES
    criteria: str

    def tool(self) -> Tool:
        """The one tool the model is made to use: its input is the analysis."""
        properties: dict[str, Any] = {}
        if self.summary:
            properties["summary"] = {"type": "string", "description": "what happened on the call, in a few "
                                                                      "sentences"}
        if self.data is not None:
            properties["data"] = self.data
        if self.scale is not None:
            properties["success"] = {**SCALES[self.scale], "description": (
                f"{SCALES[self.scale]['description']}. Criteria: {self.criteria}")}
        schema = {"type": "object", "properties": properties, "required": sorted(properties)}
        return Tool(TOOL_NAME, "Record the analysis of the call.", schema)

    def columns(self) -> list[str]:
        """The structured data's fields, in the schema's order: one CSV column each."""
        return list((self.data or {}).get("properties", {}))


def load_plan(path: str) -> AnalysisPlan:
    """The plan in ``path``; a ConfigError listing every mistake, one line each, otherwise."""
    where = f"ANALYSIS_FILE={path!r}"
    declared = read_json_file("ANALYSIS_FILE", path)
    if not isinstance(declared, dict):
        raise ConfigError(f'{where} must be a JSON object such as {{"summary": true}}')
    mistakes = [f"{where}: {name!r} is not a part of a plan (summary, data, success)"
                for name in declared if name not in ("summary", "data", "success")]
    summary = declared.get("summary", False)
    if not isinstance(summary, bool):
        mistakes.append(f"{where}: summary must be true or false")
    data = declared.get("data")
    if data is not None:
        if not isinstance(data, dict) or data.get("type") != "object":
            mistakes.append(f'{where}: data must be a JSON schema with "type": "object"')
        else:
            try:
                Draft202012Validator.check_schema(data)
            except SchemaError as exc:
                mistakes.append(f"{where}: data is not a valid JSON schema: {exc.message}")
            else:
                mistakes.extend(f"{where}: {problem}" for problem in analysis_schema.problems(data))
    success = declared.get("success")
    scale, criteria = None, ""
    if success is not None:
        if not isinstance(success, dict):
            mistakes.append(f'{where}: success must be {{"scale": ..., "criteria": "..."}}')
        else:
            scale = success.get("scale")
            criteria = success.get("criteria", "")
            if scale not in SCALES:
                mistakes.append(f"{where}: success.scale must be one of {', '.join(SCALES)}")
            if not isinstance(criteria, str) or not criteria.strip():
                mistakes.append(f"{where}: success.criteria must say what a successful call is")
    if not mistakes and not (summary or data or success):
        mistakes.append(f"{where} asks for nothing: set summary, data or success")
    if mistakes:
        raise ConfigError("\n".join(mistakes))
    return AnalysisPlan(bool(summary), data, scale if isinstance(scale, str) else None, str(criteria).strip())


class Analyst:
    """Analyses one record at a time: two asks at most, within ``timeout`` seconds in all."""

    def __init__(self, llm: LLM, plan: AnalysisPlan, timeout: float) -> None:
        self.llm = llm
        self.plan = plan
        self.timeout = timeout
        self.tool = plan.tool()
        self.validator = analysis_schema.validator_for(self.tool.input_schema, plan.data)

    def analyse(self, record: dict[str, Any]) -> dict[str, Any]:
        """The record with its ``analysis`` (or ``analysis: null`` and ``analysis_error``) and its tokens."""
        deadline = time.monotonic() + self.timeout
        messages: list[Message] = [{"role": "user", "content": _transcript_text(record)}]
        usage: dict[str, int] = {}
        problem = ""
        for _ in range(ASKS):
            left = deadline - time.monotonic()
            if left <= 0.5:
                problem = problem or f"no time left within ANALYSIS_TIMEOUT_SECONDS ({self.timeout:g} s)"
                break
            system = SYSTEM.format(tool=TOOL_NAME)
            if problem:
                system += f"\n\nYour last answer was refused: {problem}. Answer again, keeping to the schema."
            try:
                reply = self.llm.reply(system, messages, left, [self.tool], force_tool=TOOL_NAME)
            except LLMError as exc:
                problem = f"the model failed: {type(exc).__name__}: {exc}"
                continue
            for kind, tokens in reply.usage.items():
                usage[kind] = usage.get(kind, 0) + tokens
            answer = next((u.input for u in reply.tool_uses if u.name == TOOL_NAME), None)
            if answer is None:
                problem = f"the model did not use {TOOL_NAME}"
                continue
            error = next(iter(sorted(self.validator.iter_errors(answer), key=lambda e: list(e.path))), None)
            if error is not None:
                where = "/".join(str(p) for p in error.path) or "the answer"
                problem = f"it does not fit the schema at {where}: {error.message}"
                continue
            return _with(record, {k: answer.get(k) for k in ("summary", "data", "success") if k in answer},
                         None, usage)
        log.warning("call record %s goes out without its analysis: %s", record.get("id"), problem)
        metrics.RECORDS.labels("analysis_failed").inc()
        return _with(record, None, problem, usage)

    def without(self, record: dict[str, Any], why: str) -> dict[str, Any]:
        """The record going out with no analysis, and why."""
        log.warning("call record %s goes out without its analysis: %s", record.get("id"), why)
        metrics.RECORDS.labels("analysis_failed").inc()
        return _with(record, None, why, {})


def _with(record: dict[str, Any], analysis: dict[str, Any] | None, error: str | None,
          usage: dict[str, int]) -> dict[str, Any]:
    total = dict(record.get("usage") or {})
    for kind, tokens in usage.items():
        total[f"analysis_{kind}"] = total.get(f"analysis_{kind}", 0) + tokens
        metrics.LLM_TOKENS.labels(f"analysis_{kind}").inc(tokens)
    return {**record, "analysis": analysis, "analysis_error": error, "usage": total}


def _transcript_text(record: dict[str, Any]) -> str:
    """The call as the model reads it: who said what, tools and their answers, and how it ended."""
    names = {"caller": "Caller", "bot": "Agent", "tool": "Tool"}
    lines = []
    for line in record.get("transcript") or []:
        speaker = names.get(str(line.get("speaker")), "Note")
        if speaker == "Tool":
            lines.append(f"[Tool {line.get('tool')} answered: {str(line.get('text', ''))[:500]}]")
        else:
            lines.append(f"{speaker}: {line.get('text', '')}")
    facts = [f"The call ended: {record.get('end_reason')}, after {record.get('duration_seconds')} s."]
    if record.get("variables"):
        facts.append(f"What was known of the caller: {json.dumps(record['variables'])}")
    return "\n".join(["<transcript>", *lines, "</transcript>", *facts, "Analyse this call."])


class AnalysisLoop(threading.Thread):
    """One per worker process: analyses records waiting in the outbox, then hands them on to be kept and sent.

    A record being analysed stays claimed by this worker; a worker killed
    mid-way leaves it to be claimed by another once ``claim_after`` seconds
    have passed (longer than one analysis may take), and the outbox keeps one
    record per id however many workers finish it.
    """

    def __init__(self, outbox: Outbox, analyst: Analyst, *, idle_wait: float = 0.5) -> None:
        super().__init__(name="call-record-analysis", daemon=True)
        self.outbox = outbox
        self.analyst = analyst
        self.idle_wait = idle_wait
        self.claim_after = analyst.timeout + 5.0
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{id(self):x}"
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                worked = self.analyse_due()
            except StoreError as exc:
                log.warning("call record analysis paused: %s", exc)
                worked = False
            except Exception:
                log.exception("call record analysis failed unexpectedly")
                worked = False
            if not worked:
                self.stopping.wait(self.idle_wait)

    def analyse_due(self) -> bool:
        """Analyse one waiting record, if any; False when none was waiting."""
        entries = self.outbox.due_for_analysis(self.consumer, 1, self.claim_after)
        for entry in entries:
            self.outbox.analysed(entry, self._analysed(entry))
        return bool(entries)

    def _analysed(self, entry: Entry) -> dict[str, Any]:
        if entry.attempts >= MAX_STARTS:
            return self.analyst.without(entry.record, f"its analysis was started {entry.attempts} times and "
                                                      "never finished")
        return self.analyst.analyse(entry.record)

    def stop(self) -> None:
        self.stopping.set()

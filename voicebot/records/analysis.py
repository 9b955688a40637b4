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
from typing import Any

from .. import metrics
from ..exceptions import LLMError, StoreError
from ..llm import LLM, Message
from . import analysis_schema
from .outbox import Entry, Outbox
from .plan import TOOL_NAME, AnalysisPlan

log = logging.getLogger(__name__)

# Model answers asked for one record: the first, and one more when it did not fit the schema or failed.
ASKS = 2
# Workers that started a record's analysis and did not finish it (killed mid-way): past this it goes without.
MAX_STARTS = 3
SYSTEM = ("You analyse phone calls between a caller and an AI voice agent, from their transcript. "
          "Answer only by using the {tool} tool, and fill its fields from what the transcript shows; "
          "where it does not show something, say so rather than guess.")


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

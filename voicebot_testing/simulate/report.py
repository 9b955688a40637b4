"""What a simulated campaign found: the tally of every turn, its checks, and the summary it prints."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, TextIO


@dataclass
class Tally:
    """What the campaign saw (only the simulator's event loop writes to it)."""

    latencies: list[float] = field(default_factory=list)
    overheads: list[float] = field(default_factory=list)
    app_overheads: list[float] = field(default_factory=list)
    # VoIPBin, streamed replies: event sent -> first say at VoIPBin; the model's own first sentence; the gap.
    first_words: list[float] = field(default_factory=list)
    model_first_sentences: list[float] = field(default_factory=list)
    first_word_overheads: list[float] = field(default_factory=list)
    # The event that opens a call -> its greeting: the first say at VoIPBin, or the response that greets.
    greetings: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    error_example: dict[str, str] = field(default_factory=dict)
    violations: dict[str, int] = field(default_factory=dict)
    violation_example: dict[str, str] = field(default_factory=dict)
    # VoIPBin sends an event again after a 5xx or no answer; by answer status.
    redelivered: dict[str, int] = field(default_factory=dict)
    calls_done: int = 0
    calls_started: int = 0
    # Replies that repeat the call's earlier turns' markers: only voicebot fake-llm
    # does that (a model may well repeat the caller's last words).
    marked_replies: int = 0

    def turn(self, latency: float, llm: float | None, app: float | None) -> None:
        self.latencies.append(latency)
        if llm is not None:
            self.overheads.append(max(0.0, latency - llm))
            if app is not None:
                self.app_overheads.append(max(0.0, app - llm))

    def first_word(self, seconds: float, model_first_sentence: float | None) -> None:
        self.first_words.append(seconds)
        if model_first_sentence is not None:
            self.model_first_sentences.append(model_first_sentence)
            self.first_word_overheads.append(max(0.0, seconds - model_first_sentence))

    def error(self, kind: str, example: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1
        self.error_example.setdefault(kind, example)

    def violation(self, kind: str, example: str) -> None:
        self.violations[kind] = self.violations.get(kind, 0) + 1
        self.violation_example.setdefault(kind, example)


def check_reply(heard: list[str], mine: list[str], history: int) -> tuple[str, str] | None:
    """None when ``heard`` is exactly the call's last ``history`` turns; else (kind, detail)."""
    expected = mine[-history:]
    if heard == expected:
        return None
    foreign = [m for m in heard if m not in mine]
    if foreign:
        return "bleed", f"heard another call's turn {foreign[0]}"
    if len(set(heard)) < len(heard):
        return "duplicate", "a turn appears twice in the history"
    if sorted(heard) == sorted(expected):
        return "order", "turns out of order"
    if heard and heard == mine[-len(heard):]:
        # The call's latest turns, in order, just fewer or more of them: a different window.
        return ("history_window", f"the server kept the last {len(heard)} turns where --history says "
                                  f"{history}: set --history to the server's MAX_HISTORY_TURNS")
    return "loss", f"missing {[m for m in expected if m not in heard][:3]}"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


def ok(summary: dict[str, Any]) -> bool:
    violations = summary["isolation_violations"] if summary["isolation_checked"] else 0
    return summary["errors"] == 0 and violations == 0 and summary["turns"] == summary["turns_expected"]


def format_summary(s: dict[str, Any]) -> str:
    isolation = (f"isolation violations: {s['isolation_violations']} {s['violations_by_kind'] or ''}"
                 if s["isolation_checked"] else
                 "isolation: not checked (no reply carried the turns' markers: the server's model is not "
                 "voicebot fake-llm, which echoes them)")
    lines = [
        f"contract {s['contract']}: {s['calls']} calls, {s['calls_completed']} completed, "
        f"{s['turns']}/{s['turns_expected']} turns in {s['seconds']}s ({s['turns_per_second']} turns/s)",
        f"errors: {s['errors']} {s['errors_by_kind'] or ''}",
        *([f"redelivered: {s['redelivered']} {s['redelivered_by_status']} (as VoIPBin does after a 5xx: "
           "1 s later, 3 attempts in all; the wait is in the latencies)"] if s.get("redelivered") else []),
        isolation,
        "latency ms:  " + "  ".join(f"{k} {v}" for k, v in s["latency_ms"].items()),
    ]
    if s["overhead_ms"]:
        lines.append("overhead ms: " + "  ".join(f"{k} {v}" for k, v in s["overhead_ms"].items())
                     + "  (latency beyond the model's, from Server-Timing)")
    if s["in_app_overhead_ms"]:
        lines.append("in-app ms:   " + "  ".join(f"{k} {v}" for k, v in s["in_app_overhead_ms"].items())
                     + "  (the part of it spent inside voicebot's view)")
    if s.get("first_word_ms"):
        what = ("prompt sent to the reply's first text token" if s["contract"] == "twilio-relay"
                else "event sent to the first say at VoIPBin")
        lines.append("first word ms:  " + "  ".join(f"{k} {v}" for k, v in s["first_word_ms"].items())
                     + f"  ({what})")
    if s.get("model_first_sentence_ms"):
        lines.append("model's first sentence ms: "
                     + "  ".join(f"{k} {v}" for k, v in s["model_first_sentence_ms"].items()))
        lines.append("first word beyond it ms: "
                     + "  ".join(f"{k} {v}" for k, v in s["first_word_overhead_ms"].items()))
    if s.get("greeting_ms"):
        what = ("call_progressing sent to the greeting's first say at VoIPBin" if s["contract"] == "voipbin"
                else "the call's first request to the answer that greets")
        lines.append("time to greeting ms:  " + "  ".join(f"{k} {v}" for k, v in s["greeting_ms"].items())
                     + f"  ({what})")
    shown = {**s["error_examples"], **(s["violation_examples"] if s["isolation_checked"] else {})}
    for kind, example in shown.items():
        lines.append(f"  e.g. {kind}: {example}")
    lines.append("RESULT: " + ("PASS" if ok(s) else "FAIL"))
    return "\n".join(lines)


def progress_printer(stream: TextIO = sys.stderr) -> Callable[[str], None]:
    """A line rewritten in place on a terminal; a line every 5 s otherwise (CI logs)."""
    last = [0.0]

    def show(line: str) -> None:
        if stream.isatty():
            stream.write("\r" + line + "\033[K")
            stream.flush()
        elif time.monotonic() - last[0] >= 5:
            last[0] = time.monotonic()
            stream.write(line + "\n")
            stream.flush()

    return show

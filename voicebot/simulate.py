"""``voicebot simulate``: play a campaign of concurrent calls against running voicebots, and check isolation.

Every caller turn carries a unique marker (``mk...``). Against a voicebot
whose model is ``voicebot fake-llm`` (which echoes the markers of every user
message it was sent), each reply must list exactly its own call's markers, in
order: anything else is a bleed (another call's marker), a loss, a duplicate
or a reordering, and is counted with an example. Latency is measured per
turn; the server's ``Server-Timing: llm;dur=`` header gives the model's share,
and the rest is voicebot's overhead.
"""

from __future__ import annotations

import itertools
import json
import re
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

import requests

from .fake_llm import MARKER

_LLM_TIMING = re.compile(r"llm;dur=([0-9.]+)")


@dataclass
class Tally:
    """What the campaign saw; every thread adds to it under one lock."""

    latencies: list[float] = field(default_factory=list)
    overheads: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    error_example: dict[str, str] = field(default_factory=dict)
    violations: dict[str, int] = field(default_factory=dict)
    violation_example: dict[str, str] = field(default_factory=dict)
    calls_done: int = 0
    calls_started: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def turn(self, latency: float, llm: float | None) -> None:
        with self.lock:
            self.latencies.append(latency)
            if llm is not None:
                self.overheads.append(max(0.0, latency - llm))

    def error(self, kind: str, example: str) -> None:
        with self.lock:
            self.errors[kind] = self.errors.get(kind, 0) + 1
            self.error_example.setdefault(kind, example)

    def violation(self, kind: str, example: str) -> None:
        with self.lock:
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
    return "loss", f"missing {[m for m in expected if m not in heard][:3]}"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


class Campaign:
    def __init__(self, urls: list[str], *, contract: str = "seed", calls: int = 10, turns: int = 3,
                 think: float = 0.0, ramp: float = 0.0, timeout: float = 30.0, history: int = 20,
                 secret: str = "", voipbin: Any = None, progress: Callable[[str], None] | None = None) -> None:
        self.urls = [u.rstrip("/") for u in urls]
        self.contract = contract
        self.calls = calls
        self.turns = turns
        self.think = think
        self.ramp = ramp
        self.timeout = timeout
        self.history = history
        self.secret = secret
        self.voipbin = voipbin  # a FakeVoipbin that receives the speech (VoIPBin contract)
        self.progress = progress
        self.run_id = uuid.uuid4().hex[:6]
        self.tally = Tally()
        self._next_url = itertools.count()
        self._stop = threading.Event()

    def _url(self) -> str:
        # Round robin over every request, like a load balancer without stickiness.
        return self.urls[next(self._next_url) % len(self.urls)]

    # -- one call ---------------------------------------------------------------

    def _call(self, n: int) -> None:
        if self.ramp:
            self._stop.wait(self.ramp * n / self.calls)
        call_id = self.voipbin.answer_call() if self.voipbin else f"sim-{self.run_id}-{n}"
        with self.tally.lock:
            self.tally.calls_started += 1
        mine: list[str] = []
        with requests.Session() as http:
            try:
                self._open(http, call_id)
                for turn in range(self.turns):
                    if turn and self.think:
                        self._stop.wait(self.think)
                    marker = f"mk{self.run_id}c{n}t{turn}"
                    mine.append(marker)
                    heard = self._turn(http, call_id, marker)
                    problem = check_reply(heard, mine, self.history)
                    if problem:
                        kind, detail = problem
                        self.tally.violation(kind, f"call {call_id} turn {turn}: {detail} (heard {heard})")
                self._close(http, call_id)
            except _TurnFailed:
                pass
        with self.tally.lock:
            self.tally.calls_done += 1

    def _post(self, http: requests.Session, path: str, body: dict, call_id: str) -> requests.Response:
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self.contract == "voipbin" and self.secret:
            from .voipbin.signing import HEADER, sign

            headers[HEADER] = sign(data, self.secret)
        started = time.perf_counter()
        try:
            response = http.post(self._url() + path, data=data, headers=headers, timeout=self.timeout)
        except requests.Timeout:
            self.tally.error("timeout", f"call {call_id}: no answer within {self.timeout}s")
            raise _TurnFailed from None
        except requests.RequestException as exc:
            self.tally.error("connection", f"call {call_id}: {type(exc).__name__}")
            raise _TurnFailed from None
        response.elapsed_seconds = time.perf_counter() - started  # type: ignore[attr-defined]
        if response.status_code != 200:
            self.tally.error(f"http_{response.status_code}", f"call {call_id}: {response.text[:200]}")
            raise _TurnFailed
        return response

    def _open(self, http: requests.Session, call_id: str) -> None:
        if self.contract == "voipbin":
            from .voipbin.fake import call_event_data

            self._post(http, "/webhook/voipbin", {"type": "call_progressing",
                                                  "data": call_event_data(call_id, "progressing")}, call_id)
        else:
            self._post(http, "/webhook/call-started",
                       {"type": "call.started", "call_id": call_id, "caller_num": "+15550000000"}, call_id)

    def _turn(self, http: requests.Session, call_id: str, marker: str) -> list[str]:
        text = f"Caller turn {marker}, please."
        if self.contract == "voipbin":
            from .voipbin.fake import transcript_event_data

            transcribe_id = self.voipbin.transcribe_of(call_id)
            response = self._post(http, "/webhook/voipbin", {
                "type": "transcript_created", "data": transcript_event_data(transcribe_id, text)}, call_id)
            status = response.json().get("status")
            if status != "said":
                self.tally.error(f"status_{status}", f"call {call_id}: answered {response.text[:200]}")
                raise _TurnFailed
            with self.voipbin.lock:
                reply = self.voipbin.said[call_id][-1]
        else:
            response = self._post(http, "/webhook/transcript", {
                "type": "transcript", "call_id": call_id, "caller_num": "+15550000000", "transcript": text},
                call_id)
            reply = response.json().get("response", "")
        timing = _LLM_TIMING.search(response.headers.get("Server-Timing", ""))
        self.tally.turn(response.elapsed_seconds, float(timing.group(1)) / 1000 if timing else None)
        return MARKER.findall(reply)

    def _close(self, http: requests.Session, call_id: str) -> None:
        if self.contract == "voipbin":
            from .voipbin.fake import call_event_data

            self._post(http, "/webhook/voipbin", {"type": "call_hangup",
                                                  "data": call_event_data(call_id, "hangup")}, call_id)
        else:
            self._post(http, "/webhook/transcript", {"type": "call.ended", "call_id": call_id}, call_id)

    # -- the campaign -------------------------------------------------------------

    def run(self) -> dict:
        threads = [threading.Thread(target=self._call, args=(n,), daemon=True) for n in range(self.calls)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        while any(t.is_alive() for t in threads):
            threads[-1].join(1.0)
            if self.progress:
                self.progress(self._progress_line(time.perf_counter() - started))
        return self.summary(time.perf_counter() - started)

    def _progress_line(self, elapsed: float) -> str:
        t = self.tally
        with t.lock:
            turns = len(t.latencies)
            active = t.calls_started - t.calls_done
            return (f"{elapsed:6.1f}s  calls {t.calls_done}/{self.calls} done, {active} live  "
                    f"turns {turns}  errors {sum(t.errors.values())}  "
                    f"violations {sum(t.violations.values())}  {turns / max(elapsed, 1e-9):.0f} turns/s")

    def summary(self, elapsed: float) -> dict:
        t = self.tally

        def ms(values: list[float]) -> dict[str, float]:
            return {name: round(percentile(values, q) * 1000, 2)
                    for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))}

        return {
            "contract": self.contract,
            "calls": self.calls,
            "calls_completed": t.calls_done - sum(t.errors.values()),
            "turns": len(t.latencies),
            "turns_expected": self.calls * self.turns,
            "errors": sum(t.errors.values()),
            "errors_by_kind": t.errors,
            "error_examples": t.error_example,
            "isolation_violations": sum(t.violations.values()),
            "violations_by_kind": t.violations,
            "violation_examples": t.violation_example,
            "seconds": round(elapsed, 2),
            "turns_per_second": round(len(t.latencies) / elapsed, 1) if elapsed else 0.0,
            "latency_ms": ms(t.latencies),
            "overhead_ms": ms(t.overheads) if t.overheads else None,
        }


class _TurnFailed(Exception):
    """A request failed; it is already counted, and the call stops there."""


def ok(summary: dict) -> bool:
    return (summary["errors"] == 0 and summary["isolation_violations"] == 0
            and summary["turns"] == summary["turns_expected"])


def format_summary(s: dict) -> str:
    lines = [
        f"contract {s['contract']}: {s['calls']} calls, {s['calls_completed']} completed, "
        f"{s['turns']}/{s['turns_expected']} turns in {s['seconds']}s ({s['turns_per_second']} turns/s)",
        f"errors: {s['errors']} {s['errors_by_kind'] or ''}",
        f"isolation violations: {s['isolation_violations']} {s['violations_by_kind'] or ''}",
        "latency ms:  " + "  ".join(f"{k} {v}" for k, v in s["latency_ms"].items()),
    ]
    if s["overhead_ms"]:
        lines.append("overhead ms: " + "  ".join(f"{k} {v}" for k, v in s["overhead_ms"].items())
                     + "  (latency beyond the model's, from Server-Timing)")
    for kind, example in {**s["error_examples"], **s["violation_examples"]}.items():
        lines.append(f"  e.g. {kind}: {example}")
    lines.append("RESULT: " + ("PASS" if ok(s) else "FAIL"))
    return "\n".join(lines)


def progress_printer(stream=sys.stderr) -> Callable[[str], None]:
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

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

import asyncio
import gc
import itertools
import json
import re
import socket
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any, Callable, TextIO
from urllib.parse import urlencode, urlsplit

from ..voipbin.signing import HEADER, sign
from .fake_llm import MARKER
from .fake_voipbin import call_event_data, transcript_event_data

_LLM_TIMING = re.compile(r"llm;dur=([0-9.]+)")
_APP_TIMING = re.compile(r"app;dur=([0-9.]+)")
_FIRST_SENTENCE_TIMING = re.compile(r"llm-first;dur=([0-9.]+)")


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


class HTTPConnection:
    """One keep-alive HTTP/1.1 connection on asyncio streams.

    The simulator runs hundreds of calls from one process; a thread and a
    requests.Session per call would spend more CPU, and add more scheduling
    delay to every measured latency, than the server under test.
    """

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http":
            raise ValueError(f"the simulator speaks plain http to loopback or a private network: {url}")
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.base_url = f"http://{self.host}:{self.port}{self.prefix}"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        reader = self.reader
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.writer.write((f"POST {self.prefix}{path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                           f"Content-Length: {len(body)}\r\n{head}\r\n").encode() + body)
        try:
            status_line = await reader.readline()
            if not status_line:
                raise ConnectionError("the server closed the connection")
            status = int(status_line.split()[1])
            answer_headers = {}
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b"\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                answer_headers[name.strip().lower()] = value.strip()
            data = await reader.readexactly(int(answer_headers.get("content-length", 0)))
        except BaseException:
            self.close()
            raise
        if answer_headers.get("connection", "").lower() == "close":
            self.close()
        return status, answer_headers, data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


# VoIPBin's webhook sender: 3 attempts, 1 s apart, on a 5xx (../shared/voipbin-api.md).
VOIPBIN_ATTEMPTS = 3
VOIPBIN_REDELIVERY_SECONDS = 1.0


class Campaign:
    def __init__(self, urls: list[str], *, contract: str = "article", calls: int = 10, turns: int = 3,
                 think: float = 0.0, ramp: float = 0.0, timeout: float = 30.0, history: int = 20,
                 secret: str = "", voipbin: Any = None, number: str = "+15559870000",
                 twilio_token: str = "", public_url: str = "",
                 progress: Callable[[str], None] | None = None, token: str = "") -> None:
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
        self.number = number  # the number called (VoIPBin contract): one of the server's VOIPBIN_NUMBERS
        self.twilio_token = twilio_token  # TWILIO_AUTH_TOKEN of the server (Twilio contract)
        self.token = token  # WEBHOOK_TOKEN of the server (the article's contract), sent as a bearer token
        self.public_url = public_url.rstrip("/")  # its PUBLIC_URL, if set: what Twilio signs
        self._actions: dict[str, str] = {}  # call -> the path its last <Gather> posts to (Twilio contract)
        self._sockets: dict[str, Any] = {}  # call -> its ConversationRelay WebSocket (twilio-relay contract)
        self._validator: Any = None  # Twilio's RequestValidator, made once (Twilio contract)
        self.progress = progress
        self.run_id = uuid.uuid4().hex[:6]
        self.tally = Tally()
        self._next_url = itertools.count()

    # -- one call ---------------------------------------------------------------

    async def _call(self, n: int) -> None:
        if self.ramp:
            await asyncio.sleep(self.ramp * n / self.calls)
        if self.voipbin:
            call_id = self.voipbin.answer_call()
        elif self.contract in ("twilio", "twilio-relay"):
            call_id = "CA" + uuid.uuid4().hex
        else:
            call_id = f"sim-{self.run_id}-{n}"
        self.tally.calls_started += 1
        mine: list[str] = []
        # Round robin over every request, like a load balancer without
        # stickiness; one kept-alive connection per call and URL.
        connections = [HTTPConnection(url) for url in self.urls]
        try:
            await self._open(connections, call_id)
            for turn in range(self.turns):
                if turn and self.think:
                    await asyncio.sleep(self.think)
                marker = f"mk{self.run_id}c{n}t{turn}"
                mine.append(marker)
                heard = await self._turn(connections, call_id, marker)
                if len(heard) >= 2 or (self.turns == 1 and heard):
                    self.tally.marked_replies += 1
                problem = check_reply(heard, mine, self.history)
                if problem:
                    kind, detail = problem
                    self.tally.violation(kind, f"call {call_id} turn {turn}: {detail} (heard {heard})")
            await self._close(connections, call_id)
        except _TurnFailed:
            pass
        finally:
            for connection in connections:
                connection.close()
            self.tally.calls_done += 1

    async def _post(self, connections: list[HTTPConnection], path: str, body: dict[str, Any],
                    call_id: str) -> tuple[dict[str, Any], float, dict[str, Any]]:
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self.contract == "article" and self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if self.contract == "voipbin" and self.secret:
            headers[HEADER] = sign(data, self.secret)
        connection = connections[next(self._next_url) % len(connections)]
        raw, elapsed, answer_headers = await self._send(connection, path, data, headers, call_id)
        return json.loads(raw), elapsed, answer_headers

    async def _post_form(self, connections: list[HTTPConnection], path: str, fields: dict[str, str],
                         call_id: str) -> tuple[ET.Element, float, dict[str, Any]]:
        """As Twilio posts: form-encoded, signed over the URL it calls and every field; the TwiML parsed."""
        connection = connections[next(self._next_url) % len(connections)]
        url = (self.public_url or connection.base_url) + path
        headers = {"Content-Type": "application/x-www-form-urlencoded",
                   "X-Twilio-Signature": self._twilio_validator().compute_signature(url, fields)}
        raw, elapsed, answer_headers = await self._send(connection, path, urlencode(fields).encode(), headers,
                                                        call_id)
        try:
            root = ET.fromstring(raw)
        except ET.ParseError:
            self.tally.error("not_twiml", f"call {call_id}: {raw[:200].decode(errors='replace')}")
            raise _TurnFailed from None
        gather = root.find("Gather")
        if gather is not None:
            action = urlsplit(gather.get("action", ""))
            self._actions[call_id] = action.path + (f"?{action.query}" if action.query else "")
        return root, elapsed, answer_headers

    async def _send(self, connection: HTTPConnection, path: str, data: bytes, headers: dict[str, str],
                    call_id: str) -> tuple[bytes, float, dict[str, Any]]:
        """One request, and on VoIPBin its redeliveries; the time from the first attempt to the answer."""
        started = time.perf_counter()
        for attempt in range(1, VOIPBIN_ATTEMPTS + 1):
            try:
                status, answer_headers, raw = await asyncio.wait_for(
                    connection.post(path, data, headers), self.timeout)
            except asyncio.TimeoutError:
                self.tally.error("timeout", f"call {call_id}: no answer within {self.timeout}s")
                raise _TurnFailed from None
            except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
                self.tally.error("connection", f"call {call_id}: {type(exc).__name__}: {exc}")
                raise _TurnFailed from None
            if self.contract != "voipbin" or status < 500 or attempt == VOIPBIN_ATTEMPTS:
                break
            # As VoIPBin's webhook sender: a 5xx is sent again a second later,
            # whatever Retry-After says; the caller waits through it.
            self.tally.redelivered[str(status)] = self.tally.redelivered.get(str(status), 0) + 1
            await asyncio.sleep(VOIPBIN_REDELIVERY_SECONDS)
        elapsed = time.perf_counter() - started
        if status != 200:
            self.tally.error(f"http_{status}", f"call {call_id}: {raw[:200].decode(errors='replace')}")
            raise _TurnFailed
        return raw, elapsed, answer_headers

    def _twilio_validator(self) -> Any:
        if self._validator is None:
            from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

            self._validator = RequestValidator(self.twilio_token)
        return self._validator

    def _twilio_fields(self, call_id: str, **more: str) -> dict[str, str]:
        return {"CallSid": call_id, "AccountSid": "AC" + "0" * 32, "From": "+15550000000", "To": self.number,
                "CallStatus": "in-progress", "Direction": "inbound", "ApiVersion": "2010-04-01", **more}

    async def _open(self, connections: list[HTTPConnection], call_id: str) -> None:
        if self.contract == "voipbin":
            event = {"type": "call_progressing",
                     "data": call_event_data(call_id, "progressing", callee=self.number)}
            sent = time.perf_counter()
            await self._post(connections, "/webhook/voipbin", event, call_id)
            with self.voipbin.lock:
                greeted = self.voipbin.said_at[call_id][:1]
            if greeted:
                self.tally.greetings.append(greeted[0] - sent)
        elif self.contract == "twilio":
            _, elapsed, _ = await self._post_form(connections, "/webhook/twilio/voice",
                                                  self._twilio_fields(call_id, CallStatus="ringing"), call_id)
            self.tally.greetings.append(elapsed)
            if call_id not in self._actions:
                self.tally.error("no_gather", f"call {call_id}: the greeting did not listen")
                raise _TurnFailed
        elif self.contract == "twilio-relay":
            root, elapsed, _ = await self._post_form(connections, "/webhook/twilio/voice",
                                                     self._twilio_fields(call_id, CallStatus="ringing"), call_id)
            self.tally.greetings.append(elapsed)  # the TwiML carries the welcome greeting
            relay = root.find("Connect/ConversationRelay")
            if relay is None:
                self.tally.error("no_relay", f"call {call_id}: /voice did not connect a ConversationRelay "
                                             "(is TWILIO_MODE=relay set?)")
                raise _TurnFailed
            self._sockets[call_id] = await asyncio.to_thread(self._relay_open, relay.get("url", ""), call_id)
        else:
            _, elapsed, _ = await self._post(connections, "/webhook/call-started", {
                "type": "call.started", "call_id": call_id, "caller_num": "+15550000000"}, call_id)
            self.tally.greetings.append(elapsed)

    async def _turn(self, connections: list[HTTPConnection], call_id: str, marker: str) -> list[str]:
        text = f"Caller turn {marker}, please."
        if self.contract == "voipbin":
            transcribe_id = self.voipbin.transcribe_of(call_id)
            event = {"type": "transcript_created", "data": transcript_event_data(transcribe_id, text)}
            with self.voipbin.lock:
                before = len(self.voipbin.said[call_id])
            sent = time.perf_counter()
            answer, elapsed, headers = await self._post(connections, "/webhook/voipbin", event, call_id)
            if answer.get("status") != "said":
                self.tally.error(f"status_{answer.get('status')}", f"call {call_id}: answered {answer}")
                raise _TurnFailed
            with self.voipbin.lock:
                # A streamed reply is several says: the turn's reply is all of them.
                reply = " ".join(self.voipbin.said[call_id][before:])
                first_said = self.voipbin.said_at[call_id][before:before + 1]
            first_sentence = _FIRST_SENTENCE_TIMING.search(headers.get("server-timing", ""))
            if first_said:
                self.tally.first_word(first_said[0] - sent,
                                      float(first_sentence.group(1)) / 1000 if first_sentence else None)
        elif self.contract == "twilio-relay":
            reply, elapsed, first = await asyncio.to_thread(self._relay_turn, self._sockets[call_id], text,
                                                            marker.endswith("t1"))
            self.tally.turn(elapsed, None, None)
            if first is not None:
                self.tally.first_word(first, None)
            return MARKER.findall(reply)
        elif self.contract == "twilio":
            root, elapsed, headers = await self._post_form(
                connections, self._actions.pop(call_id), self._twilio_fields(call_id, SpeechResult=text), call_id)
            if root.find("Gather") is None:
                self.tally.error("no_gather", f"call {call_id}: the reply did not listen again")
                raise _TurnFailed
            reply = " ".join(say.text or "" for say in root.iter("Say"))
        else:
            answer, elapsed, headers = await self._post(connections, "/webhook/transcript", {
                "type": "transcript", "call_id": call_id, "caller_num": "+15550000000", "transcript": text},
                call_id)
            reply = answer.get("response", "")
        timings = headers.get("server-timing", "")
        llm, app = _LLM_TIMING.search(timings), _APP_TIMING.search(timings)
        self.tally.turn(elapsed, float(llm.group(1)) / 1000 if llm else None,
                        float(app.group(1)) / 1000 if app else None)
        return MARKER.findall(reply)

    async def _close(self, connections: list[HTTPConnection], call_id: str) -> None:
        if self.contract == "twilio-relay":
            ws = self._sockets.pop(call_id)
            await asyncio.to_thread(self._relay_turn, ws, None, False, "1")  # a key press, then the caller hangs up
            await asyncio.to_thread(_quiet_close, ws)
        elif self.contract == "voipbin":
            event = {"type": "call_hangup", "data": call_event_data(call_id, "hangup", callee=self.number)}
            await self._post(connections, "/webhook/voipbin", event, call_id)
        elif self.contract == "twilio":
            self._actions.pop(call_id, None)
            await self._post_form(connections, "/webhook/twilio/status",
                                  self._twilio_fields(call_id, CallStatus="completed", CallDuration="30"), call_id)
        else:
            await self._post(connections, "/webhook/transcript", {"type": "call.ended", "call_id": call_id},
                             call_id)

    # -- ConversationRelay: one WebSocket per call, played as Twilio plays it (in a thread each) --

    def _relay_open(self, url: str, call_id: str) -> Any:
        from simple_websocket import Client  # type: ignore[import-untyped]

        signature = self._twilio_validator().compute_signature(url, {})
        try:
            ws = Client.connect(url, headers={"X-Twilio-Signature": signature})
        except Exception as exc:
            self.tally.error("relay_refused", f"call {call_id}: {type(exc).__name__}: {exc}")
            raise _TurnFailed from None
        # As Twilio's side would: setup and the first prompt go out back to back, and Nagle's algorithm would
        # hold the prompt until the setup is acknowledged (a delayed ACK: 40 ms on the first turn's clock).
        ws.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ws.send(json.dumps({"type": "setup", "sessionId": "VX" + uuid.uuid4().hex, "accountSid": "AC" + "0" * 32,
                            "callSid": call_id, "from": "+15550000000", "to": self.number, "direction": "inbound",
                            "callStatus": "RINGING", "customParameters": {}}))
        return ws

    def _relay_turn(self, ws: Any, text: str | None, interrupt: bool,
                    digit: str = "") -> tuple[str, float, float | None]:
        """A prompt (or a key press), and the reply's tokens up to ``last``; with ``interrupt`` the caller talks
        over it after its first token. The reply heard, the turn's time, and the first token's."""
        if digit:
            ws.send(json.dumps({"type": "dtmf", "digit": digit}))
        else:
            ws.send(json.dumps({"type": "prompt", "voicePrompt": text, "lang": "en-US", "last": True}))
        sent = time.perf_counter()
        first: float | None = None
        tokens: list[str] = []
        while True:
            raw = ws.receive(timeout=self.timeout)
            if raw is None:
                self.tally.error("timeout", f"no relay reply within {self.timeout}s")
                raise _TurnFailed
            message = json.loads(raw)
            if message.get("type") != "text":
                continue
            if first is None and message.get("token"):
                first = time.perf_counter() - sent
                if interrupt:
                    ws.send(json.dumps({"type": "interrupt", "utteranceUntilInterrupt": message["token"].strip(),
                                        "durationUntilInterruptMs": 500}))
            tokens.append(message.get("token", ""))
            if message.get("last"):
                return "".join(tokens), time.perf_counter() - sent, first

    # -- the campaign -------------------------------------------------------------

    def wait_until_up(self, seconds: float) -> str:
        """Wait until every URL answers HTTP (its /healthz), for up to ``seconds`` (0: do not wait); '' once
        all answer, else which did not."""
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + seconds
        waiting = list(self.urls) if seconds > 0 else []
        while waiting:
            try:
                with urllib.request.urlopen(waiting[0] + "/healthz", timeout=2):
                    pass
                waiting.pop(0)
                continue
            except urllib.error.HTTPError:  # an answer all the same: something serves HTTP there
                waiting.pop(0)
                continue
            except OSError:
                pass
            if time.monotonic() >= deadline:
                return f"{waiting[0]} did not answer /healthz within {seconds:g} s (is voicebot running there?)"
            time.sleep(0.1)
        return ""

    def run(self) -> dict[str, Any]:
        # The simulator's own garbage collections would show up as server
        # latency: keep them small (see voicebot/gunicorn_config.py).
        gc.freeze()
        gc.set_threshold(50_000, 20, 20)
        return asyncio.run(self._run())

    async def _run(self) -> dict[str, Any]:
        started = time.perf_counter()
        calls = asyncio.gather(*(self._call(n) for n in range(self.calls)))
        while True:
            done, _ = await asyncio.wait({calls}, timeout=1.0)
            if self.progress:
                self.progress(self._progress_line(time.perf_counter() - started))
            if done:
                break
        return self.summary(time.perf_counter() - started)

    def _progress_line(self, elapsed: float) -> str:
        t = self.tally
        turns = len(t.latencies)
        active = t.calls_started - t.calls_done
        return (f"{elapsed:6.1f}s  calls {t.calls_done}/{self.calls} done, {active} live  "
                f"turns {turns}  errors {sum(t.errors.values())}  "
                f"violations {sum(t.violations.values())}  {turns / max(elapsed, 1e-9):.0f} turns/s")

    def summary(self, elapsed: float) -> dict[str, Any]:
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
            "redelivered": sum(t.redelivered.values()),
            "redelivered_by_status": t.redelivered,
            "isolation_checked": t.marked_replies > 0,
            "isolation_violations": sum(t.violations.values()) if t.marked_replies else 0,
            "violations_by_kind": t.violations,
            "violation_examples": t.violation_example,
            "seconds": round(elapsed, 2),
            "turns_per_second": round(len(t.latencies) / elapsed, 1) if elapsed else 0.0,
            "latency_ms": ms(t.latencies),
            "overhead_ms": ms(t.overheads) if t.overheads else None,
            "in_app_overhead_ms": ms(t.app_overheads) if t.app_overheads else None,
            "first_word_ms": ms(t.first_words) if t.first_words else None,
            "model_first_sentence_ms": ms(t.model_first_sentences) if t.model_first_sentences else None,
            "first_word_overhead_ms": ms(t.first_word_overheads) if t.first_word_overheads else None,
            "greeting_ms": ms(t.greetings) if t.greetings else None,
        }


class _TurnFailed(Exception):
    """A request failed; it is already counted, and the call stops there."""


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


def _quiet_close(ws: Any) -> None:
    try:
        ws.close()
    except Exception:  # closed already by the other side
        pass

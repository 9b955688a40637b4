"""The simulated campaign: concurrent calls on one of voicebot's contracts, each turn checked."""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import re
import time
import uuid
import xml.etree.ElementTree as ET
from typing import Any, Callable
from urllib.parse import urlencode, urlsplit

from voicebot.voipbin.signing import HEADER, sign

from ..fake_llm import MARKER
from ..fake_voipbin import call_event_data, transcript_event_data
from . import completions, sockets
from .connection import HTTPConnection
from .report import Tally, check_reply, percentile

_LLM_TIMING = re.compile(r"llm;dur=([0-9.]+)")
_APP_TIMING = re.compile(r"app;dur=([0-9.]+)")
_FIRST_SENTENCE_TIMING = re.compile(r"llm-first;dur=([0-9.]+)")

# VoIPBin's webhook sender: 3 attempts, 1 s apart, on a 5xx (../shared/voipbin-api.md).
VOIPBIN_ATTEMPTS = 3
VOIPBIN_REDELIVERY_SECONDS = 1.0


class Campaign:
    """Concurrent simulated calls against running voicebots on one contract, each reply checked against
    its own call's markers."""

    def __init__(self, urls: list[str], *, contract: str = "article", calls: int = 10, turns: int = 3,
                 think: float = 0.0, ramp: float = 0.0, timeout: float = 30.0, history: int = 20,
                 secret: str = "", voipbin: Any = None, number: str = "+15559870000",
                 twilio_token: str = "", public_url: str = "",
                 progress: Callable[[str], None] | None = None, token: str = "",
                 elevenlabs_secret: str = "", retell: Any = None, telnyx: Any = None) -> None:
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
        self._said: dict[str, list[dict[str, str]]] = {}  # call -> its conversation (custom-LLM dialects)
        self.elevenlabs_secret = elevenlabs_secret  # ELEVENLABS_WEBHOOK_SECRET of the server, if set
        self.retell = retell  # a FakeRetell that the server asks about its calls (retell contract)
        self.telnyx = telnyx  # a TelnyxSigner whose public key is the server's TELNYX_PUBLIC_KEY (telnyx-relay)
        self._streams = completions.StreamingClient(calls)  # its threads start only when a dialect's call needs one
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
        elif self.contract == "telnyx-relay":
            call_id = "v3:" + uuid.uuid4().hex
        elif self.contract == "retell":
            call_id = self.retell.register()
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
        body = urlencode(fields).encode()
        headers = self.telnyx.headers(body) if self.contract == "telnyx-relay" else {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": self._twilio_validator().compute_signature(url, fields)}
        raw, elapsed, answer_headers = await self._send(connection, path, body, headers, call_id)
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

    async def _ask(self, connections: list[HTTPConnection], call_id: str) -> tuple[float, str]:
        """One streamed turn of a custom-LLM dialect: the whole conversation sent, the reply added to it."""
        connection = connections[next(self._next_url) % len(connections)]
        path, body, headers = completions.request(self.contract, call_id, self._said[call_id], self.token)
        started = time.perf_counter()
        try:
            status, raw = await self._streams.post(connection.base_url + path, body, headers, self.timeout)
        except Exception as exc:  # the egress layer's errors: a timeout, a connection refused
            self.tally.error("connection", f"call {call_id}: {type(exc).__name__}: {exc}")
            raise _TurnFailed from None
        elapsed = time.perf_counter() - started
        if status != 200:
            self.tally.error(f"http_{status}", f"call {call_id}: {raw[:200].decode(errors='replace')}")
            raise _TurnFailed
        try:
            reply = completions.answer_of(raw)[0]
        except ValueError as exc:
            self.tally.error("not_a_stream", f"call {call_id}: {exc}")
            raise _TurnFailed from None
        self._said[call_id].append({"role": "assistant", "content": reply})
        return elapsed, reply

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
        elif self.contract in ("twilio-relay", "telnyx-relay"):
            platform = self.contract.split("-")[0]
            root, elapsed, _ = await self._post_form(connections, f"/webhook/{platform}/voice",
                                                     self._twilio_fields(call_id, CallStatus="ringing"), call_id)
            self.tally.greetings.append(elapsed)  # the TwiML carries the welcome greeting
            relay = root.find("Connect/ConversationRelay")
            if relay is None:
                self.tally.error("no_relay", f"call {call_id}: /voice did not connect a ConversationRelay "
                                             "(is TWILIO_MODE=relay set?)")
                raise _TurnFailed
            url = relay.get("url", "")
            headers = {} if platform == "telnyx" else {  # Telnyx does not sign the handshake
                "X-Twilio-Signature": self._twilio_validator().compute_signature(url, {})}
            self._sockets[call_id] = await self._in_thread(sockets.relay_open, url, headers, call_id, self.number)
        elif self.contract == "retell":
            started = time.perf_counter()
            url = self.urls[next(self._next_url) % len(self.urls)]
            self._sockets[call_id] = await self._in_thread(sockets.retell_open, url, call_id)
            self.tally.greetings.append(time.perf_counter() - started)
        elif self.contract in completions.DIALECTS:
            self._said[call_id] = [{"role": "system", "content": "The platform's own prompt (voicebot ignores it)."}]
            elapsed, _ = await self._ask(connections, call_id)
            self.tally.greetings.append(elapsed)
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
        elif self.contract in ("twilio-relay", "telnyx-relay", "retell"):
            if self.contract == "retell":
                reply, elapsed, first = await self._in_thread(sockets.retell_turn, self._sockets[call_id], text,
                                                              self.timeout)
            else:
                reply, elapsed, first = await self._in_thread(sockets.relay_turn, self._sockets[call_id], text,
                                                              marker.endswith("t1"), self.timeout)
            self.tally.turn(elapsed, None, None)
            if first is not None:
                self.tally.first_word(first, None)
            return MARKER.findall(reply)
        elif self.contract in completions.DIALECTS:
            self._said[call_id].append({"role": "user", "content": text})
            elapsed, reply = await self._ask(connections, call_id)
            self.tally.turn(elapsed, None, None)
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
        if self.contract in ("twilio-relay", "telnyx-relay"):
            ws = self._sockets.pop(call_id)
            # A key press, then the caller hangs up.
            await self._in_thread(sockets.relay_turn, ws, None, False, self.timeout, "1")
            await asyncio.to_thread(sockets.quiet_close, ws)
        elif self.contract == "retell":
            self.retell.end(call_id)  # the caller hung up: Retell says so, then closes the socket
            await asyncio.to_thread(self._sockets.pop(call_id).close)
        elif self.contract in completions.DIALECTS:
            report = completions.end_report(self.contract, call_id, self.token, self.elevenlabs_secret)
            self._said.pop(call_id, None)
            if report is not None:
                await self._send(connections[0], *report, call_id)
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

    # -- the socket contracts: one WebSocket per call, played in a thread each (``sockets``) --

    async def _in_thread(self, step: Callable[..., Any], *args: Any) -> Any:
        try:
            return await asyncio.to_thread(step, *args)
        except sockets.SocketRefused as exc:
            self.tally.error("socket", str(exc))
            raise _TurnFailed from None

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
        try:
            return asyncio.run(self._run())
        finally:
            self._streams.close()

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

"""A strict stand-in for Twilio's Calls API (``POST /2010-04-01/Accounts/{Sid}/Calls.json``), on loopback.

It takes what Twilio takes and refuses what Twilio refuses: HTTP basic auth
with the account's SID and auth token, a form-encoded body, ``To`` and
``From`` in E.164 form, a ``Url`` to fetch TwiML from, ``MachineDetection``
of ``Enable`` or ``DetectMessageEnd``. It answers 201 with the call (status
``queued``), as Twilio does, and keeps each call placed; ``answer_fields``
gives the fields Twilio then posts to the call's ``Url`` (``AnsweredBy``
included), and ``status_fields`` those of its status callback.

With ``calls_itself`` (``voicebot fake-twilio``) it also plays each placed
call as Twilio would: the callee's number says who answers (ending in 0001
busy, 0002 nobody, 0003 an answering machine, anything else a person), it
requests the call's ``Url`` signed with ``X-Twilio-Signature`` and
``AnsweredBy``, follows the TwiML (a person answers one ``<Gather>`` with
``person_says``, then hangs up) and posts the status callback at the end.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from urllib.parse import parse_qs

import requests

from .loopback import JSONHandler, LoopbackServer

E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
CALLS_PATH = re.compile(r"^/2010-04-01/Accounts/(AC[0-9a-f]{32})/Calls\.json$")
ANSWERED_BY = ("human", "machine_start", "machine_end_beep", "machine_end_silence", "machine_end_other", "fax",
               "unknown")


class FakeTwilio(LoopbackServer):
    """A strict stand-in for Twilio's Calls API on loopback, which plays the calls it is asked to place."""

    thread_name = "fake-twilio"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, account_sid: str = "AC" + "1" * 32,
                 auth_token: str = "twilio-auth-token-for-tests") -> None:
        super().__init__((host, port), _Handler)
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.placed: list[dict[str, str]] = []  # each call's parameters, with its "Sid"
        self.fail_next = 0  # the next requests answered 503
        self.lock = threading.Lock()
        self.calls_itself = False
        self.person_says = "Yes, that works for me."
        self.heard: dict[str, list[str]] = {}  # call sid -> what was said into it (<Say>), in order
        self.live = 0  # placed calls up now, and the most at once
        self.live_peak = 0

    @property
    def api_url(self) -> str:
        return self.base_url

    def call(self, sid: str) -> dict[str, str]:
        with self.lock:
            return next(dict(p) for p in self.placed if p["Sid"] == sid)

    def answer_fields(self, sid: str, answered_by: str = "human") -> dict[str, str]:
        """What Twilio posts to the call's Url once it is answered and its machine detection is done."""
        assert answered_by in ANSWERED_BY
        placed = self.call(sid)
        fields = self._fields(placed, "in-progress")
        if placed.get("MachineDetection"):
            fields["AnsweredBy"] = answered_by
        return fields

    def status_fields(self, sid: str, status: str, duration: int = 0) -> dict[str, str]:
        """What Twilio posts to the call's StatusCallback when it ends (completed, busy, no-answer, failed...)."""
        fields = self._fields(self.call(sid), status)
        fields["CallDuration"] = str(duration)
        return fields

    def _fields(self, placed: dict[str, str], status: str) -> dict[str, str]:
        return {"CallSid": placed["Sid"], "AccountSid": self.account_sid, "From": placed["From"],
                "To": placed["To"], "CallStatus": status, "Direction": "outbound-api", "ApiVersion": "2010-04-01"}

    def play(self, sid: str) -> None:
        """The placed call, as Twilio runs it against the application's URLs (see the module)."""
        placed = self.call(sid)
        number = placed["To"]
        with self.lock:
            self.live += 1
            self.live_peak = max(self.live_peak, self.live)
        counted = True  # the call counts as live until the person hangs up
        try:
            time.sleep(0.05)  # it rings
            ending = {"0001": "busy", "0002": "no-answer"}.get(number[-4:])
            if ending:
                self._post(placed.get("StatusCallback"), self.status_fields(sid, ending))
                return
            answered_by = "machine_end_beep" if number.endswith("0003") else "human"
            twiml = self._post(placed["Url"], self.answer_fields(sid, answered_by))
            if twiml and "<ConversationRelay" in twiml:
                counted = False  # _relay counts the call over when the person hangs up
                self._relay(sid, placed, twiml)
                twiml = None
            for _ in range(10):
                action = self._follow(sid, twiml)
                if action is None:
                    break
                fields = {**self._fields(placed, "in-progress"), "SpeechResult": self.person_says,
                          "Confidence": "0.9"}
                twiml = self._post(action, fields)
            self._post(placed.get("StatusCallback"), self.status_fields(sid, "completed", 3))
        finally:
            if counted:
                with self.lock:
                    self.live -= 1

    def _relay(self, sid: str, placed: dict[str, str], twiml: str) -> None:
        """A <Connect><ConversationRelay>: the greeting heard, the socket opened and signed as Twilio does, the
        person's words said as prompts, the bot's tokens heard, then what the <Connect action> says next."""
        root = ET.fromstring(twiml)
        relay = root.find("Connect/ConversationRelay")
        assert relay is not None
        self.heard.setdefault(sid, []).append(relay.get("welcomeGreeting") or "")
        call: RelayCall | None = None
        handoff: str | None = None
        try:
            call = RelayCall(relay.get("url", ""), self.auth_token, sid, placed["From"], placed["To"])
            for _ in range(2):  # a person hangs up after a couple of exchanges
                words, handoff = call.say(self.person_says)
                self.heard[sid].append(words)
                if handoff is not None:
                    break
        except Exception as exc:  # the socket refused or closed: said, not swallowed
            self.heard[sid].append(f"[relay failed: {type(exc).__name__}: {exc}]")
        finally:
            # The person hangs up: the call is over then (its socket closes because of it), before its status
            # callback is posted.
            with self.lock:
                self.live -= 1
            if call is not None:
                call.hang_up()
        action = root.find("Connect")
        if handoff is not None and action is not None and action.get("action"):
            self._post(action.get("action"), {**self._fields(placed, "in-progress"), "HandoffData": handoff})

    def _follow(self, sid: str, twiml: str | None) -> str | None:
        """Hear the TwiML's <Say>s; the <Gather>'s action to post speech to, or None when it hangs up."""
        if not twiml:
            return None
        root = ET.fromstring(twiml)
        self.heard.setdefault(sid, []).extend(say.text or "" for say in root.iter("Say"))
        gather = root.find("Gather")
        if gather is None or root.find("Hangup") is not None or len(self.heard[sid]) > 3:
            return None  # a person hangs up after a couple of exchanges
        return gather.get("action")

    def _post(self, url: str | None, fields: dict[str, str]) -> str | None:
        if not url:
            return None
        from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

        signature = RequestValidator(self.auth_token).compute_signature(url, fields)
        try:
            answer = requests.post(url, data=fields, headers={"X-Twilio-Signature": signature}, timeout=15)
        except requests.RequestException:
            return None
        return answer.text if answer.ok else None


class _Handler(JSONHandler):
    server: FakeTwilio

    def _error(self, status: int, code: int, message: str) -> None:
        self.send_json(status, {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/"
                                f"{code}", "status": status})

    def do_POST(self) -> None:
        raw = self.read_body()
        match = CALLS_PATH.match(self.path.split("?")[0])
        if match is None:
            return self._error(404, 20404, "The requested resource was not found")
        expected = base64.b64encode(f"{self.server.account_sid}:{self.server.auth_token}".encode()).decode()
        if self.headers.get("Authorization") != f"Basic {expected}" or match.group(1) != self.server.account_sid:
            return self._error(401, 20003, "Authenticate")
        with self.server.lock:
            if self.server.fail_next > 0:
                self.server.fail_next -= 1
                return self._error(503, 20503, "Service unavailable")
        if not self.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
            return self._error(400, 20001, "Content-Type must be application/x-www-form-urlencoded")
        form = {k: v[-1] for k, v in parse_qs(raw.decode(), keep_blank_values=True).items()}
        problem = _problem(form)
        if problem:
            return self._error(400, problem[0], problem[1])
        sid = "CA" + uuid.uuid4().hex
        with self.server.lock:
            self.server.placed.append({**form, "Sid": sid})
        if self.server.calls_itself:
            threading.Thread(target=self.server.play, args=(sid,), name="fake-twilio-call", daemon=True).start()
        self.send_json(201, {"sid": sid, "account_sid": self.server.account_sid, "to": form["To"],
                             "from": form["From"], "status": "queued", "direction": "outbound-api",
                             "api_version": "2010-04-01", "uri": f"/2010-04-01/Accounts/{self.server.account_sid}"
                                                                 f"/Calls/{sid}.json"})


class RelayCall:
    """Twilio's side of one ConversationRelay socket: the handshake signed over its URL, ``setup``, then what
    the caller says as prompts and the bot's tokens up to ``last`` (or its ``end``)."""

    def __init__(self, url: str, auth_token: str, sid: str, caller: str, called: str) -> None:
        from .ws_client import Client
        from twilio.request_validator import RequestValidator

        signature = RequestValidator(auth_token).compute_signature(url, {})
        self.ws = Client.connect(url, headers={"X-Twilio-Signature": signature})
        self.ws.send(json.dumps({"type": "setup", "sessionId": "VX" + uuid.uuid4().hex, "callSid": sid,
                                 "accountSid": "AC" + "0" * 32, "from": caller, "to": called,
                                 "direction": "inbound", "callStatus": "IN-PROGRESS", "customParameters": {}}))

    def say(self, words: str, timeout: float = 15.0) -> tuple[str, str | None]:
        """The caller says ``words``: the bot's reply, and its ``end``'s handoff data if it ended the session."""
        self.ws.send(json.dumps({"type": "prompt", "voicePrompt": words, "lang": "en-US", "last": True}))
        tokens: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            raw = self.ws.receive(timeout=max(0.1, deadline - time.monotonic()))
            if raw is None:
                raise TimeoutError(f"no reply within {timeout:g} s")
            message = json.loads(raw)
            if message.get("type") == "end":
                return "".join(tokens).strip(), str(message.get("handoffData") or "{}")
            if message.get("type") == "text":
                tokens.append(message.get("token", ""))
                if message.get("last"):
                    # An ``end`` may follow at once (a goodbye): it is read before the caller speaks again.
                    follow = self.ws.receive(timeout=0.3)
                    if follow is not None and json.loads(follow).get("type") == "end":
                        return "".join(tokens).strip(), str(json.loads(follow).get("handoffData") or "{}")
                    return "".join(tokens).strip(), None

    def hang_up(self) -> None:
        try:
            self.ws.close()
        except Exception:
            pass


def _problem(form: dict[str, str]) -> tuple[int, str] | None:
    if not form.get("To"):
        return 21201, "No 'To' number is specified"
    if not E164.match(form["To"]):
        return 21211, f"Invalid 'To' Phone Number: {form['To']}"
    if not form.get("From") or not E164.match(form["From"]):
        return 21212, "Invalid 'From' Phone Number"
    if not any(form.get(k) for k in ("Url", "Twiml", "ApplicationSid")):
        return 21205, "Url parameter is required"
    if form.get("Url") and not form["Url"].startswith(("http://", "https://")):
        return 21205, "Url is not a valid URL"
    if form.get("MachineDetection") not in (None, "Enable", "DetectMessageEnd"):
        return 21215, "MachineDetection must be Enable or DetectMessageEnd"
    for key in ("Method", "StatusCallbackMethod"):
        if form.get(key) not in (None, "GET", "POST"):
            return 21205, f"{key} must be GET or POST"
    return None


def serve(host: str, port: int, *, account_sid: str, auth_token: str) -> None:
    """Run in the foreground until interrupted (``voicebot fake-twilio``): it plays the calls it is asked for."""
    server = FakeTwilio(host, port, account_sid=account_sid, auth_token=auth_token)
    server.calls_itself = True
    server.run_in_foreground(f"fake Twilio Calls API on {server.api_url} (account {account_sid})")

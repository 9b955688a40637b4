"""``voicebot try twilio``: a Twilio call, on this machine, with you as the caller.

A voicebot on a loopback port (a real HTTP server: ConversationRelay is a WebSocket) and this process
playing Twilio: a signed ``/voice`` for an incoming call, then, in the Gather loop (``--mode gather``), each
line you type posted as the ``SpeechResult`` of the ``<Gather>``'s action and the TwiML's ``<Say>`` printed;
in relay mode (``--mode relay``) the socket the TwiML names opened with Twilio's signature, each line a
``prompt``, the streamed tokens printed as they come, and, after ``end``, the ``<Connect action>``'s answer.
Ctrl-D or ``/hangup`` hangs up. ANTHROPIC_API_KEY when set, the offline responder otherwise.
"""

from __future__ import annotations

import os
import sys
import threading
import uuid
import xml.etree.ElementTree as ET
from typing import Any, TextIO
from urllib.parse import urlsplit

import requests
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

from .fake_twilio import RelayCall

TOKEN = "try-twilio-auth-token"
CALLER, NUMBER = "+15551234567", "+15559870000"


def run(mode: str = "gather", lines: TextIO | None = None, out: TextIO | None = None) -> int:
    from werkzeug.serving import make_server

    from voicebot import create_app

    lines = sys.stdin if lines is None else lines
    out = sys.stdout if out is None else out
    apps: list[Any] = []  # the port first, the app after: its PUBLIC_URL names the port
    server = make_server("127.0.0.1", 0, lambda environ, start: apps[0](environ, start), threaded=True)
    public = f"http://127.0.0.1:{server.server_port}"
    apps.append(create_app({"TWILIO_AUTH_TOKEN": TOKEN, "TWILIO_MODE": mode, "PUBLIC_URL": public,
                            "REDIS_URL": "", "LOG_LEVEL": os.environ.get("LOG_LEVEL", "WARNING")}))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        return _Call(public, mode, lines, out).run()
    finally:
        server.shutdown()


class _Call:
    def __init__(self, public: str, mode: str, lines: TextIO, out: TextIO) -> None:
        self.public, self.mode, self.lines, self.out = public, mode, lines, out
        self.sid = "CA" + uuid.uuid4().hex
        self.validator = RequestValidator(TOKEN)

    def show(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def post(self, url: str, **more: str) -> ET.Element:
        fields = {"CallSid": self.sid, "AccountSid": "AC" + "0" * 32, "From": CALLER, "To": NUMBER,
                  "CallStatus": "in-progress", "Direction": "inbound", "ApiVersion": "2010-04-01", **more}
        answer = requests.post(url, data=fields, timeout=20,
                               headers={"X-Twilio-Signature": self.validator.compute_signature(url, fields)})
        return ET.fromstring(answer.text)

    def said(self, twiml: ET.Element) -> None:
        for say in twiml.iter("Say"):
            self.show(f"voicebot says: {say.text or ''}")
        dial = twiml.find("Dial")
        if dial is not None:
            self.show(f"[Twilio] voicebot hands the caller to {dial.text}")
        elif twiml.find("Hangup") is not None:
            self.show("[Twilio] voicebot hung up the call")

    def heard(self) -> str | None:
        if self.lines.isatty():
            print("caller: ", end="", file=self.out, flush=True)
        while True:
            text = self.lines.readline()
            if not text or text.strip() == "/hangup":
                return None
            if text.strip():
                return text.strip()

    def run(self) -> int:
        self.show(f"[Twilio] incoming call {self.sid} to {NUMBER} ({self.mode} mode); signed requests go to voicebot")
        twiml = self.post(f"{self.public}/webhook/twilio/voice", CallStatus="ringing")
        ended = self._relay(twiml) if self.mode == "relay" else self._gather(twiml)
        if not ended:
            self.show("[Twilio] the caller hung up")
        self.post(f"{self.public}/webhook/twilio/status", CallStatus="completed", CallDuration="30")
        return 0

    def _gather(self, twiml: ET.Element) -> bool:
        while True:
            self.said(twiml)
            gather = twiml.find("Gather")
            if gather is None:
                return True
            text = self.heard()
            if text is None:
                return False
            action = urlsplit(gather.get("action", ""))
            twiml = self.post(f"{self.public}{action.path}?{action.query}", SpeechResult=text, Confidence="0.9")

    def _relay(self, twiml: ET.Element) -> bool:
        relay = twiml.find("Connect/ConversationRelay")
        if relay is None:
            self.said(twiml)
            return True
        self.show(f"voicebot says: {relay.get('welcomeGreeting') or ''}")
        call = RelayCall(relay.get("url", ""), TOKEN, self.sid, CALLER, NUMBER)
        try:
            while True:
                text = self.heard()
                if text is None:
                    return False
                words, handoff = call.say(text)
                self.show(f"voicebot says: {words}")
                if handoff is not None:
                    connect = twiml.find("Connect")
                    self.said(self.post(connect.get("action", "") if connect is not None else "",
                                        HandoffData=handoff))
                    return True
        finally:
            call.hang_up()

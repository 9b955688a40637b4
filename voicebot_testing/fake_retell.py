"""A strict stand-in for Retell: its call API (``GET /v2/get-call/{call_id}``), its signed webhooks, and its
side of the custom-LLM socket, on loopback.

The API takes what Retell takes: ``Authorization: Bearer <the account's API key>`` (401 otherwise, as
Retell answers), and knows only the calls registered with it (404 ``{"status": 404, "message": ...}`` for
any other). A call is ``registered`` when made, ``ongoing`` once its socket is up, and ``ended`` with a
``disconnection_reason`` when the caller or the agent hangs up. ``webhook`` posts a call event as Retell
does: the JSON body signed ``x-retell-signature: v=<ms>,d=<HMAC-SHA256(api key, body + ms)>``.

``RetellSocket`` plays Retell's side of ``{url}/{call_id}``: it reads the config and the begin message,
echoes nothing itself, sends ``response_required`` with the whole transcript (the agent's turns as they
were heard) and reads the streamed ``response`` events of one ``response_id``.
"""

from __future__ import annotations

import gzip
import json
import re
import secrets
import threading
import time
from typing import Any

import requests
from .ws_client import Client

from voicebot.retell.signature import sign

from .loopback import JSONHandler, LoopbackServer

GET_CALL = re.compile(r"^/v2/get-call/([^/?]+)$")


def new_call_id() -> str:
    """A call id as Retell makes them: 32 letters and digits."""
    return secrets.token_hex(16)


class FakeRetell(LoopbackServer):
    """Retell's call API for one account, knowing only the calls ``register``ed with it."""

    thread_name = "fake-retell"

    def __init__(self, api_key: str = "key_retell_for_tests", host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__((host, port), _Handler)
        self.api_key = api_key
        self.calls: dict[str, dict[str, Any]] = {}
        self.asked: list[str] = []  # the call ids asked about, in order
        # How it misbehaves, for hostile tests: "" (it does not), "error" (500), "not_json", "huge" (a 2 MB
        # call), "gzip_bomb" (a small gzip that inflates past any cap), "other_call" (another call's object),
        # "redirect" (302 to elsewhere).
        self.misbehave = ""
        self.lock = threading.Lock()

    @property
    def api_url(self) -> str:
        return self.base_url

    def register(self, call_id: str | None = None, *, from_number: str = "+15551230000",
                 to_number: str = "+15559870000", direction: str = "inbound",
                 variables: dict[str, str] | None = None, status: str = "ongoing") -> str:
        call_id = call_id or new_call_id()
        with self.lock:
            self.calls[call_id] = {"call_type": "phone_call", "call_id": call_id, "agent_id": "agent_fake",
                                   "call_status": status, "direction": direction, "from_number": from_number,
                                   "to_number": to_number, "retell_llm_dynamic_variables": variables or {},
                                   "start_timestamp": int(time.time() * 1000)}
        return call_id

    def end(self, call_id: str, reason: str = "user_hangup") -> dict[str, Any]:
        with self.lock:
            call = self.calls[call_id]
            call.update(call_status="ended", disconnection_reason=reason, end_timestamp=int(time.time() * 1000))
            return dict(call)

    def webhook(self, url: str, event: str, call_id: str, *, key: str | None = None,
                stamp_ms: int | None = None) -> requests.Response:
        """Post ``event`` for the call to voicebot's webhook URL, signed as Retell signs it."""
        with self.lock:
            body = json.dumps({"event": event, "call": dict(self.calls[call_id])}, separators=(",", ":")).encode()
        return requests.post(url, data=body, timeout=10, headers={
            "Content-Type": "application/json", "x-retell-signature": sign(body, key or self.api_key, stamp_ms)})


class _Handler(JSONHandler):
    server: FakeRetell

    def do_GET(self) -> None:
        match = GET_CALL.match(self.path)
        if self.headers.get("Authorization") != f"Bearer {self.server.api_key}":
            return self.send_json(401, {"status": 401, "message": "Unauthorized: invalid API key"})
        if match is None:
            return self.send_json(404, {"status": 404, "message": "Not Found"})
        with self.server.lock:
            self.server.asked.append(match.group(1))
            call = self.server.calls.get(match.group(1))
            call = dict(call) if call is not None else None
        if call is None:
            return self.send_json(404, {"status": 404, "message": "Call not found"})
        hostile = self.server.misbehave
        if hostile == "error":
            return self.send_json(500, {"status": 500, "message": "Internal Server Error"})
        if hostile == "redirect":
            return self.send_json(302, {}, Location="http://127.0.0.1:9/v2/get-call/x")
        if hostile in ("not_json", "gzip_bomb"):
            body = b"<html>busy</html>" if hostile == "not_json" else gzip.compress(b"{" + b" " * (64 << 20))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            if hostile == "gzip_bomb":
                self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return None
        if hostile == "huge":
            call["transcript"] = "x" * (2 << 20)
        if hostile == "other_call":
            call["call_id"] = new_call_id()
        self.send_json(200, call)


class RetellSocket:
    """Retell's side of one call's custom-LLM socket."""

    def __init__(self, url: str) -> None:
        self.ws = Client.connect(url)
        self.transcript: list[dict[str, str]] = []
        self.response_id = 0
        self.config = self.receive()
        self.begin = self.receive()
        assert self.config["response_type"] == "config", self.config
        assert self.begin["response_type"] == "response" and self.begin["response_id"] == 0, self.begin
        if self.begin["content"]:
            self.transcript.append({"role": "agent", "content": self.begin["content"]})

    def receive(self, timeout: float = 15.0) -> dict[str, Any]:
        raw = self.ws.receive(timeout=timeout)
        if raw is None:
            raise TimeoutError("nothing from voicebot")
        message: dict[str, Any] = json.loads(raw)
        return message

    def say(self, words: str, *, kind: str = "response_required") -> int:
        """The caller said ``words`` (appended to the transcript): ask for a response; its id."""
        if words:
            self.transcript.append({"role": "user", "content": words})
        self.response_id += 1
        self.ws.send(json.dumps({"interaction_type": kind, "response_id": self.response_id,
                                 "transcript": self.transcript}))
        return self.response_id

    def response(self, response_id: int | None = None, timeout: float = 15.0,
                 heard: int | None = None) -> tuple[str, dict[str, Any]]:
        """The words of one response, up to content_complete (and its last event); others' events are kept
        in ``stray``. ``heard``: the caller heard only that many characters (it goes into the transcript)."""
        response_id = self.response_id if response_id is None else response_id
        words, deadline = [], time.monotonic() + timeout
        while True:
            message = self.receive(max(0.1, deadline - time.monotonic()))
            if message.get("response_type") != "response":
                continue
            assert message["response_id"] == response_id, (message, response_id)
            words.append(message["content"])
            if message["content_complete"]:
                text = "".join(words)
                said = text if heard is None else text[:heard]
                if said:
                    self.transcript.append({"role": "agent", "content": said})
                return text, message

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:
            pass

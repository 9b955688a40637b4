"""A stand-in for VoIPBin on loopback: its REST API for speech, and its signed webhook sender.

The REST side is strict where VoIPBin is: the access key is required, ids it
did not hand out are 404, a transcribe or speaking needs a call that is
``progressing``, a say needs non-empty text on a live speaking. It records
what was said in which call, so a test or the simulator can check that each
call heard replies made from its own turns only. The sender signs events as
VoIPBin does and wraps them in its ``{"type", "data"}`` envelope.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections import defaultdict
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests

from ..loopback import JSONHandler, LoopbackServer
from .signing import HEADER, sign

_ROUTES = [
    (re.compile(r"^/v1\.0/transcribes$"), "create_transcribe"),
    (re.compile(r"^/v1\.0/transcribes/([^/]+)/stop$"), "stop_transcribe"),
    (re.compile(r"^/v1\.0/speakings$"), "create_speaking"),
    (re.compile(r"^/v1\.0/speakings/([^/]+)/(say|flush|stop)$"), "speaking_action"),
]


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


class FakeVoipbin(LoopbackServer):
    """``with FakeVoipbin() as voipbin: ...``; point ``VOIPBIN_API_URL`` at ``voipbin.api_url``."""

    thread_name = "fake-voipbin"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, access_key: str = "test-access-key",
                 webhook_secret: str = "test-webhook-secret-0123456789ab", auto_answer: bool = False,
                 echo: bool = False) -> None:
        super().__init__((host, port), _Handler)
        # auto_answer: any call id is taken for a live call (for trying voicebot
        # by hand); echo: print what is said, as a caller would hear it.
        self.auto_answer = auto_answer
        self.echo = echo
        self.access_key = access_key
        self.webhook_secret = webhook_secret
        self.lock = threading.Lock()
        self.calls: dict[str, str] = {}  # call id -> status
        self.transcribes: dict[str, dict] = {}
        self._live_transcribe: dict[str, str] = {}  # call id -> transcribe id
        self.speakings: dict[str, dict] = {}
        self.said: dict[str, list[str]] = defaultdict(list)  # call id -> texts, in order
        self.flushed: list[str] = []  # speaking ids
        self.fail_next: dict[str, int] = defaultdict(int)  # action -> how many to answer 500
        self.hang_next: dict[str, int] = defaultdict(int)  # action -> how many to leave unanswered
        self._sender = requests.Session()

    @property
    def api_url(self) -> str:
        return self.base_url + "/v1.0"

    def stop(self) -> None:
        super().stop()
        self._sender.close()

    # -- the platform's side of a call ---------------------------------------

    def answer_call(self, call_id: str | None = None) -> str:
        """A call that has been answered (``progressing``): transcribes and speakings may start."""
        call_id = call_id or str(uuid.uuid4())
        with self.lock:
            self.calls[call_id] = "progressing"
        return call_id

    def hang_up(self, call_id: str) -> None:
        with self.lock:
            self.calls[call_id] = "hangup"

    def transcribe_of(self, call_id: str) -> str | None:
        """The id of the live transcribe voicebot started on ``call_id``."""
        with self.lock:
            return self._live_transcribe.get(call_id)

    def send(self, url: str, event_type: str, data: dict, *, secret: str | None = None,
             timeout: float = 35.0) -> requests.Response:
        """Deliver one event as VoIPBin does: enveloped, signed, with a 30 s-ish client timeout."""
        body = json.dumps({"type": event_type, "data": data}).encode()
        headers = {"Content-Type": "application/json",
                   HEADER: sign(body, self.webhook_secret if secret is None else secret)}
        return self._sender.post(url, data=body, headers=headers, timeout=timeout)

    # -- handling REST requests ------------------------------------------------

    def handle_api(self, method: str, path: str, query: dict, body: Any) -> tuple[int, dict]:
        if query.get("accesskey", [""])[0] != self.access_key:
            raise ApiError(401, "unauthorized")
        if method != "POST":
            raise ApiError(405, "method not allowed")
        for pattern, name in _ROUTES:
            match = pattern.match(path)
            if match:
                if not isinstance(body, dict):
                    raise ApiError(400, "body must be a JSON object")
                return getattr(self, "_" + name)(body, *match.groups())
        raise ApiError(404, "not found")

    def _fault(self, action: str) -> str | None:
        with self.lock:
            for kind, counts in (("hang", self.hang_next), ("fail", self.fail_next)):
                if counts[action] > 0:
                    counts[action] -= 1
                    return kind
        return None

    def _live_call(self, body: dict) -> str:
        if body.get("reference_type") != "call":
            raise ApiError(400, "reference_type must be call")
        call_id = body.get("reference_id")
        if self.auto_answer and isinstance(call_id, str) and call_id not in self.calls:
            self.calls[call_id] = "progressing"
        if call_id not in self.calls:
            raise ApiError(404, "call not found")
        if self.calls[call_id] != "progressing":
            raise ApiError(400, "call is not progressing")
        if not isinstance(body.get("language"), str) or not body["language"]:
            raise ApiError(400, "language is required")
        return call_id

    def _create_transcribe(self, body: dict) -> tuple[int, dict]:
        with self.lock:
            call_id = self._live_call(body)
            if body.get("direction") not in ("in", "out", "both"):
                raise ApiError(400, "direction must be in, out or both")
            transcribe_id = str(uuid.uuid4())
            self.transcribes[transcribe_id] = {"call_id": call_id, "status": "progressing",
                                               "direction": body["direction"]}
            self._live_transcribe[call_id] = transcribe_id
        if self.echo:
            print(f"[{call_id}] transcribing the caller: transcribe_id {transcribe_id}", flush=True)
        return 200, {"id": transcribe_id, "reference_type": "call", "reference_id": call_id,
                     "status": "progressing", "language": body["language"],
                     "direction": body["direction"], "tm_create": _now()}

    def _stop_transcribe(self, body: dict, transcribe_id: str) -> tuple[int, dict]:
        with self.lock:
            if transcribe_id not in self.transcribes:
                raise ApiError(404, "transcribe not found")
            self.transcribes[transcribe_id]["status"] = "done"
            call_id = self.transcribes[transcribe_id]["call_id"]
            if self._live_transcribe.get(call_id) == transcribe_id:
                del self._live_transcribe[call_id]
        return 200, {"id": transcribe_id, "status": "done"}

    def _create_speaking(self, body: dict) -> tuple[int, dict]:
        with self.lock:
            call_id = self._live_call(body)
            if body.get("direction", "out") not in ("in", "out", "both"):
                raise ApiError(400, "direction must be in, out or both")
            speaking_id = str(uuid.uuid4())
            self.speakings[speaking_id] = {"call_id": call_id, "status": "initiating",
                                           "language": body["language"], "provider": body.get("provider"),
                                           "voice_id": body.get("voice_id")}
        return 201, {"id": speaking_id, "status": "initiating", "reference_id": call_id}

    def _speaking_action(self, body: dict, speaking_id: str, action: str) -> tuple[int, dict]:
        with self.lock:
            speaking = self.speakings.get(speaking_id)
            if speaking is None:
                raise ApiError(404, "speaking not found")
            if speaking["status"] == "stopped" and action != "stop":
                raise ApiError(400, "speaking is stopped")
            if action == "say":
                text = body.get("text")
                if not isinstance(text, str) or not text.strip():
                    raise ApiError(400, "text is required")
                if self.calls.get(speaking["call_id"]) != "progressing":
                    raise ApiError(400, "call is not progressing")
                self.said[speaking["call_id"]].append(text)
                if self.echo:
                    print(f"[{speaking['call_id']}] bot says: {text}", flush=True)
            elif action == "flush":
                self.flushed.append(speaking_id)
            else:
                speaking["status"] = "stopped"
        return 200, {"id": speaking_id, "status": speaking["status"]}


class _Handler(JSONHandler):
    server: FakeVoipbin

    def _dispatch(self, method: str) -> None:
        raw = self.read_body()
        url = urlsplit(self.path)
        action = url.path.rsplit("/", 1)[-1]
        fault = self.server._fault(action)
        if fault == "hang":
            self.server.pause(60)
            self.close_connection = True
            return
        if fault == "fail":
            return self.send_json(500, {"message": "internal error"})
        try:
            body = json.loads(raw) if raw else {}
            status, payload = self.server.handle_api(method, url.path, parse_qs(url.query), body)
        except ValueError:
            status, payload = 400, {"message": "body is not JSON"}
        except ApiError as exc:
            status, payload = exc.status, {"message": str(exc)}
        self.send_json(status, payload)

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_GET(self) -> None:
        self._dispatch("GET")


# -- event bodies, shaped like VoIPBin's -----------------------------------------

def call_event_data(call_id: str, status: str, caller: str = "+15551230000",
                    callee: str = "+15559870000") -> dict:
    address = {"type": "tel", "target_name": "", "name": "", "detail": ""}
    return {
        "id": call_id, "customer_id": "5e4a0680-804e-11ec-8477-2fea5968d85b",
        "flow_id": str(uuid.uuid4()), "activeflow_id": str(uuid.uuid4()), "type": "flow",
        "status": status, "direction": "incoming",
        "source": {**address, "target": caller}, "destination": {**address, "target": callee},
        "tm_create": _now(), "tm_update": _now(),
    }


def transcript_event_data(transcribe_id: str, message: str, direction: str = "in",
                          transcript_id: str | None = None) -> dict:
    return {
        "id": transcript_id or str(uuid.uuid4()), "customer_id": "5e4a0680-804e-11ec-8477-2fea5968d85b",
        "transcribe_id": transcribe_id, "direction": direction, "message": message,
        "tm_transcript": "0001-01-01T00:00:08.99184Z", "tm_create": _now(),
    }


def speech_event_data(transcribe_id: str, direction: str = "in") -> dict:
    return {
        "id": str(uuid.uuid4()), "customer_id": "5e4a0680-804e-11ec-8477-2fea5968d85b",
        "streaming_id": str(uuid.uuid4()), "transcribe_id": transcribe_id, "direction": direction,
        "tm_event": _now(), "tm_create": _now(),
    }


def serve(host: str, port: int, access_key: str) -> None:
    """Run in the foreground until interrupted (``voicebot fake-voipbin``)."""
    server = FakeVoipbin(host, port, access_key=access_key, auto_answer=True, echo=True)
    server.run_in_foreground(f"fake VoIPBin REST API on {server.api_url} (access key {access_key!r}); "
                             "what voicebot says into calls is printed here")

"""The fake VoIPBin itself: its calls, transcribes and speakings, its signed webhook sender."""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections import defaultdict
from typing import Any

import requests

from voicebot.voipbin.signing import HEADER, sign

from ..loopback import LoopbackServer
from .account import AccountResources
from .base import CUSTOMER_ID, NIL_UUID, ApiError, Json, go_json, now, page
from .events import call_event_data, is_address
from .flows import FlowRunner
from .handler import Handler

_ROUTES = [
    ("POST", re.compile(r"^/transcribes$"), "create_transcribe"),
    ("GET", re.compile(r"^/transcribes$"), "list_transcribes"),
    ("POST", re.compile(r"^/transcribes/([^/]+)/stop$"), "stop_transcribe"),
    ("POST", re.compile(r"^/speakings$"), "create_speaking"),
    ("GET", re.compile(r"^/speakings$"), "list_speakings"),
    ("POST", re.compile(r"^/speakings/([^/]+)/(say|flush|stop)$"), "speaking_action"),
    ("POST", re.compile(r"^/calls$"), "create_calls"),
    ("GET", re.compile(r"^/calls/([^/]+)$"), "get_call"),
    ("POST", re.compile(r"^/calls/([^/]+)/hangup$"), "hangup_call"),
    ("GET", re.compile(r"^/customer$"), "get_customer"),
    ("PUT", re.compile(r"^/customer$"), "put_customer"),
    ("GET", re.compile(r"^/numbers$"), "list_numbers"),
    ("PUT", re.compile(r"^/numbers/([^/]+)/flow_ids$"), "put_number_flows"),
    ("GET", re.compile(r"^/flows$"), "list_flows"),
    ("POST", re.compile(r"^/flows$"), "create_flow"),
    ("PUT", re.compile(r"^/flows/([^/]+)$"), "put_flow"),
]


class _Bucket:
    """VoIPBin's per-customer limit: about 16.7 requests/s, bursts of 33."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.stamp = float(burst), time.monotonic()

    def take(self) -> float:
        """0 when a request may go, else the seconds until it may."""
        now_ = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now_ - self.stamp) * self.rate)
        self.stamp = now_
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class FakeVoipbin(LoopbackServer, AccountResources):
    """``with FakeVoipbin() as voipbin: ...``; point ``VOIPBIN_API_URL`` at ``voipbin.api_url``."""

    thread_name = "fake-voipbin"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, access_key: str = "test-access-key",
                 webhook_secret: str = "test-webhook-secret-0123456789ab", auto_answer: bool = False,
                 echo: bool = False) -> None:
        super().__init__((host, port), Handler)
        # auto_answer: any call id is taken for a live call (for trying voicebot
        # by hand); echo: print what is said, as a caller would hear it.
        self.auto_answer = auto_answer
        self.echo = echo
        self.access_key = access_key
        self.webhook_secret = webhook_secret
        self.lock = threading.Lock()
        self.calls: dict[str, Json] = {}
        self.transcribes: dict[str, Json] = {}
        self.speakings: dict[str, Json] = {}
        self.said: dict[str, list[str]] = defaultdict(list)  # call id -> texts, in order
        self.said_at: dict[str, list[float]] = defaultdict(list)  # call id -> time.perf_counter() of each say
        self.flushed: list[str] = []  # speaking ids
        self.hung_up_by_api: list[str] = []  # call ids
        self.placed: list[Json] = []  # each POST /calls body, with the ids of the calls it made ("call_ids")
        # A placed call rings this long before it is answered (or not), and a person listens this long.
        self.ring_seconds = 0.3
        self.talk_seconds = 4.0
        self.live_placed: set[str] = set()  # placed calls not yet hung up
        self.live_peak = 0  # the most placed calls up at once
        self.requests: list[tuple[str, str]] = []  # (method, path?query) of every authorized request
        self.fail_next: dict[str, int] = defaultdict(int)
        self.hang_next: dict[str, int] = defaultdict(int)
        self.lose_answer: dict[str, int] = defaultdict(int)
        self.rate_limit_next: dict[str, int] = defaultdict(int)
        self.retry_after = 1
        self.latency = 0.0
        self.rate_limit: _Bucket | None = None
        self.rate_limited = 0  # requests answered 429 by the rate limit
        self.customer = {"id": CUSTOMER_ID, "name": "Example Co", "detail": "support line",
                         "email": "ops@example.com", "phone_number": "+15550001111",
                         "address": "1 Main St", "webhook_method": "POST", "webhook_uri": "",
                         "webhook_secret": webhook_secret, "tm_create": now()}
        self.numbers: dict[str, Json] = {}
        self.flows: dict[str, Json] = {}
        self.writes: list[str] = []  # "PUT /customer" etc., for idempotency checks
        # Where events of changes made through the API go (VoIPBin sends call_hangup after a
        # POST /calls/{id}/hangup as after any hang-up); None: not sent.
        self.webhook_url: str | None = None
        self._sender = requests.Session()

    @property
    def api_url(self) -> str:
        return self.base_url + "/v1.0"

    def stop(self) -> None:
        super().stop()
        self._sender.close()

    def limit_rate(self, rate: float = 50 / 3, burst: int = 33) -> None:
        self.rate_limit = _Bucket(rate, burst)

    # -- the platform's side of a call ---------------------------------------

    def answer_call(self, call_id: str | None = None, *, direction: str = "incoming",
                    caller: str = "+15551230000", callee: str = "+15559870000") -> str:
        """A call that has been answered (``progressing``): transcribes and speakings may start."""
        call_id = call_id or str(uuid.uuid4())
        with self.lock:
            call = self.calls.get(call_id) or call_event_data(call_id, "progressing", caller, callee, direction)
            call["status"] = "progressing"
            self.calls[call_id] = call
        return call_id

    def hang_up(self, call_id: str, by: str = "remote", reason: str = "normal") -> Json:
        """The call ends (``reason``: normal, busy, noanswer, failed, amd, ...): VoIPBin stops its
        transcribes and speakings with it."""
        with self.lock:
            return self._end_call(call_id, by, reason)

    def _end_call(self, call_id: str, by: str, reason: str = "normal") -> Json:
        call = self.calls.setdefault(call_id, call_event_data(call_id, "hangup"))
        call.update(status="hangup", hangup_by=by, hangup_reason=reason, tm_hangup=now())
        self.live_placed.discard(call_id)
        for transcribe in self.transcribes.values():
            if transcribe["reference_id"] == call_id:
                transcribe["status"] = "done"
        for speaking in self.speakings.values():
            if speaking["reference_id"] == call_id:
                speaking["status"] = "stopped"
        return dict(call)

    def add_number(self, number: str, call_flow_id: str = NIL_UUID) -> Json:
        with self.lock:
            entry = {"id": str(uuid.uuid4()), "customer_id": CUSTOMER_ID, "number": number,
                     "call_flow_id": call_flow_id, "message_flow_id": NIL_UUID, "name": number,
                     "detail": "", "status": "active", "tm_create": now()}
            self.numbers[entry["id"]] = entry
            return entry

    def kill_stream(self, speaking_id: str) -> None:
        """The text-to-speech server restarted: the session says 'active' but says nothing more."""
        with self.lock:
            self.speakings[speaking_id]["stream_alive"] = False

    def transcribe_of(self, call_id: str) -> str | None:
        """The id of the progressing transcribe on ``call_id``."""
        with self.lock:
            live = [t for t in self.transcribes.values()
                    if t["reference_id"] == call_id and t["status"] == "progressing"]
            return live[-1]["id"] if live else None

    def live(self, kind: str, call_id: str) -> list[Json]:
        """The call's progressing transcribes (``kind="transcribes"``) or active speakings."""
        with self.lock:
            table, status = ((self.transcribes, "progressing") if kind == "transcribes"
                             else (self.speakings, "active"))
            return [dict(item) for item in table.values()
                    if item["reference_id"] == call_id and item["status"] == status]

    # -- sending events and fetch requests, as VoIPBin does -------------------

    def send(self, url: str, event_type: str, data: Json, *, secret: str | None = None,
             method: str = "POST", timeout: float = 15.0) -> requests.Response:
        """Deliver one event once: enveloped, compact Go JSON, signed; 15 s for the answer's headers."""
        body = go_json({"type": event_type, "data": data})
        headers = {"Content-Type": "application/json"}
        secret = self.webhook_secret if secret is None else secret
        if secret:
            headers[HEADER] = sign(body, secret)
        return self._sender.request(method, url, data=body, headers=headers, timeout=(10, timeout))

    def deliver(self, url: str, event_type: str, data: Json, *, method: str = "POST",
                timeout: float = 15.0) -> requests.Response | None:
        """VoIPBin's retry loop: up to 3 attempts, 1 s apart, only on a 5xx or a transport error."""
        answer = None
        for attempt in range(3):
            if attempt:
                time.sleep(1.0)
            try:
                answer = self.send(url, event_type, data, method=method, timeout=timeout)
            except requests.RequestException:
                answer = None
                continue
            if answer.status_code < 500:
                return answer
        return answer

    def fetch(self, url: str, call_id: str, activeflow_id: str | None = None, *,
              method: str = "POST", timeout: float = 3.0) -> requests.Response:
        """The ``fetch`` flow action's request: unsigned, ``{"activeflow_id", "reference_id"}``."""
        body = go_json({"activeflow_id": activeflow_id or str(uuid.uuid4()), "reference_id": call_id})
        return self._sender.request(method, url, data=body, timeout=(10, timeout),
                                    headers={"Content-Type": "application/json; charset=utf-8"})

    # -- handling REST requests ------------------------------------------------

    def authorized(self, query: Json, cookie: str) -> bool:
        cookies = dict(part.strip().split("=", 1) for part in cookie.split(";") if "=" in part)
        return self.access_key in (query.get("accesskey", [""])[0], cookies.get("accesskey"))

    def handle_api(self, method: str, path: str, query: Json, body: Any) -> tuple[int, Any]:
        for route_method, pattern, name in _ROUTES:
            match = pattern.match(path)
            if match and route_method == method:
                if method in ("POST", "PUT") and not isinstance(body, dict):
                    raise ApiError(400, "body must be a JSON object")
                with self.lock:
                    answer: tuple[int, Any] = getattr(self, "_" + name)(body, query, *match.groups())
                    return answer
        raise ApiError(404, "not found")

    def fault(self, action: str) -> str | None:
        with self.lock:
            for kind, counts in (("hang", self.hang_next), ("fail", self.fail_next),
                                 ("lose", self.lose_answer), ("limit", self.rate_limit_next)):
                if counts[action] > 0:
                    counts[action] -= 1
                    return kind
            if self.rate_limit is not None:
                wait = self.rate_limit.take()
                if wait:
                    self.retry_after = max(1, int(wait + 0.999))
                    self.rate_limited += 1
                    return "limit"
        return None

    def _call_for(self, body: Json) -> Json:
        if body.get("reference_type") != "call":
            raise ApiError(400, "reference_type must be call")
        call_id = body.get("reference_id")
        if not isinstance(call_id, str):
            raise ApiError(400, "reference_id must be a call id")
        if self.auto_answer and call_id not in self.calls:
            self.calls[call_id] = call_event_data(call_id, "progressing")
        call = self.calls.get(call_id)
        if call is None:
            raise ApiError(404, "call not found")
        if call["status"] not in ("dialing", "ringing", "progressing"):
            raise ApiError(400, "the call is not live", "FAILED_PRECONDITION")
        if not isinstance(body.get("language"), str) or not body["language"]:
            raise ApiError(400, "language is required")
        return call

    def _create_transcribe(self, body: Json, query: Json) -> tuple[int, Json]:
        call = self._call_for(body)
        direction = body.get("direction") or "both"
        if direction not in ("in", "out", "both"):
            raise ApiError(400, "direction must be in, out or both")
        for other in self.transcribes.values():
            if (other["reference_id"] == call["id"] and other["language"] == body["language"]
                    and other["status"] == "progressing"):
                raise ApiError(409, "the call already has a progressing transcribe",
                               "TRANSCRIBE_ALREADY_PROGRESSING")
        transcribe = {"id": str(uuid.uuid4()), "customer_id": CUSTOMER_ID, "reference_type": "call",
                      "reference_id": call["id"], "status": "progressing", "language": body["language"],
                      "direction": direction, "tm_create": now(), "tm_update": now(), "tm_delete": None}
        self.transcribes[transcribe["id"]] = transcribe
        if self.echo:
            print(f"[{call['id']}] transcribing the caller: transcribe_id {transcribe['id']}", flush=True)
        return 200, dict(transcribe)

    def _list_transcribes(self, body: Any, query: Json) -> tuple[int, Json]:
        wanted = {k: query[k][0] for k in ("reference_type", "reference_id") if k in query}
        items = [dict(t) for t in self.transcribes.values() if all(t.get(k) == v for k, v in wanted.items())]
        return 200, page(items, query)

    def _create_calls(self, body: Json, query: Json) -> tuple[int, Json]:
        """POST /calls: one outgoing call per destination, as call-manager makes them (status dialing)."""
        source: Any = body.get("source")
        destinations = body.get("destinations")
        if not is_address(source):
            raise ApiError(400, "source must be an address with a type and a target")
        if not isinstance(destinations, list) or not destinations or not all(map(is_address, destinations)):
            raise ApiError(400, "destinations must be a list of addresses")
        has_flow = body.get("flow_id") not in (None, "", NIL_UUID)
        actions = body.get("actions")
        if has_flow == bool(actions):
            raise ApiError(400, "give either flow_id or actions")
        if actions is not None and (not isinstance(actions, list)
                                    or not all(isinstance(a, dict) and isinstance(a.get("type"), str)
                                               for a in actions)):
            raise ApiError(400, "actions must be a list of actions with a type")
        variables = body.get("variables", {})
        if not isinstance(variables, dict) or not all(isinstance(v, str) for v in variables.values()):
            raise ApiError(400, "variables must be an object of strings")
        if len(variables) > 100:
            raise ApiError(400, "variables: at most 100 keys")
        if body.get("anonymous", "auto") not in ("yes", "no", "auto"):
            raise ApiError(400, "anonymous must be yes, no or auto")
        calls = []
        for destination in destinations:
            call = call_event_data(str(uuid.uuid4()), "dialing", source["target"], destination["target"], "outgoing")
            self.calls[call["id"]] = call
            self.live_placed.add(call["id"])
            self.live_peak = max(self.live_peak, len(self.live_placed))
            calls.append(dict(call))
        self.placed.append({**body, "call_ids": [c["id"] for c in calls]})
        events_to = self.webhook_url or self.customer.get("webhook_uri")
        if events_to and actions:
            for call in calls:
                threading.Thread(target=self._run_placed, args=(events_to, call["id"], list(actions)),
                                 name="fake-voipbin-placed", daemon=True).start()
        return 200, {"calls": calls, "groupcalls": []}

    def _run_placed(self, url: str, call_id: str, actions: list[Json]) -> None:
        """A placed call, as the one it reaches answers it (see ``callee``): rung, then busy, not answered,
        a machine (``amd`` hangs up on it) or a person, who listens to the bot and hangs up after
        ``talk_seconds``."""
        callee = self.callee(self.calls[call_id]["destination"]["target"])
        self.deliver(url, "call_dialing", dict(self.calls[call_id]))
        self.deliver(url, "call_ringing", self._set_status(call_id, "ringing"))
        self.pause(self.ring_seconds)
        if callee in ("busy", "noanswer"):
            self.deliver(url, "call_hangup", self.hang_up(call_id, by="remote", reason=callee))
            return
        amd = next((a for a in actions if a.get("type") == "amd"), None)
        flow = [a for a in actions if a.get("type") != "amd"]
        self.answer_call(call_id)
        self.deliver(url, "call_progressing", dict(self.calls[call_id]))
        if callee == "machine" and amd is not None and (amd.get("option") or {}).get("machine_handle") == "hangup":
            self.pause(self.ring_seconds)  # the detection listens a moment
            self.deliver(url, "call_hangup", self.hang_up(call_id, by="local", reason="amd"))
            return
        threading.Timer(self.talk_seconds, lambda: self.calls[call_id]["status"] != "hangup" and self.deliver(
            url, "call_hangup", self.hang_up(call_id, by="remote"))).start()
        FlowRunner(self, url, flow, time_scale=1.0, max_steps=10_000).run(call_id)

    def callee(self, number: str) -> str:
        """Who answers a number: ending in 0001 busy, 0002 nobody (noanswer), 0003 a machine; else a person."""
        return {"0001": "busy", "0002": "noanswer", "0003": "machine"}.get(number[-4:], "person")

    def _set_status(self, call_id: str, status: str) -> Json:
        with self.lock:
            self.calls[call_id]["status"] = status
            return dict(self.calls[call_id])

    def _stop_transcribe(self, body: Json, query: Json, transcribe_id: str) -> tuple[int, Json]:
        transcribe = self.transcribes.get(transcribe_id)
        if transcribe is None:
            raise ApiError(404, "transcribe not found")
        transcribe["status"] = "done"
        return 200, dict(transcribe)

    def _create_speaking(self, body: Json, query: Json) -> tuple[int, Json]:
        call = self._call_for(body)
        direction = body.get("direction", "out")
        if direction not in ("in", "out", "both"):
            raise ApiError(400, "direction must be in, out or both")
        if any(s["reference_id"] == call["id"] and s["status"] == "active" for s in self.speakings.values()):
            # streaming-manager fails to open a second stream on the call: a plain 500.
            raise ApiError(500, "could not create the speaking")
        speaking = {"id": str(uuid.uuid4()), "customer_id": CUSTOMER_ID, "reference_type": "call",
                    "reference_id": call["id"], "language": body["language"],
                    "provider": body.get("provider", ""), "voice_id": body.get("voice_id", ""),
                    "direction": direction, "status": "active", "tm_create": now(), "tm_update": now()}
        self.speakings[speaking["id"]] = {**speaking, "stream_alive": True}
        return 201, speaking

    def _list_speakings(self, body: Any, query: Json) -> tuple[int, Json]:
        items = [{k: v for k, v in s.items() if k != "stream_alive"} for s in self.speakings.values()]
        return 200, page(list(reversed(items)), query)

    def _speaking_action(self, body: Json, query: Json, speaking_id: str, action: str) -> tuple[int, Json]:
        speaking = self.speakings.get(speaking_id)
        if speaking is None:
            raise ApiError(404, "speaking not found")
        if action == "stop":
            speaking["status"] = "stopped"
        elif speaking["status"] != "active" or not speaking["stream_alive"]:
            raise ApiError(404, "the speaking is not active")
        elif action == "say":
            text = body.get("text")
            if not isinstance(text, str) or not text.strip() or len(text.encode()) > 5000:
                raise ApiError(400, "text must be non-empty and at most 5000 bytes")
            self.said[speaking["reference_id"]].append(text)
            self.said_at[speaking["reference_id"]].append(time.perf_counter())
            if self.echo:
                print(f"[{speaking['reference_id']}] bot says: {text}", flush=True)
        else:
            self.flushed.append(speaking_id)
        return 200, {k: v for k, v in speaking.items() if k != "stream_alive"}

    def _get_call(self, body: Any, query: Json, call_id: str) -> tuple[int, Json]:
        if call_id not in self.calls:
            raise ApiError(404, "call not found")
        return 200, dict(self.calls[call_id])

    def _hangup_call(self, body: Json, query: Json, call_id: str) -> tuple[int, Json]:
        if call_id not in self.calls:
            raise ApiError(404, "call not found")
        self.hung_up_by_api.append(call_id)
        call = self._end_call(call_id, "local")
        if self.webhook_url:
            threading.Thread(target=self.deliver, args=(self.webhook_url, "call_hangup", dict(call)),
                             daemon=True).start()
        return 200, call


def serve(host: str, port: int, access_key: str, webhook: str = "") -> None:
    """Run in the foreground until interrupted (``voicebot fake-voipbin``); events of the calls it places go
    to ``webhook`` (or the customer's webhook_uri, once ``voicebot voipbin setup`` has set it)."""
    server = FakeVoipbin(host, port, access_key=access_key, auto_answer=True, echo=True)
    server.webhook_url = webhook or None
    server.run_in_foreground(f"fake VoIPBin REST API on {server.api_url} (access key {access_key!r}); "
                             "what voicebot says into calls is printed here")

"""A call's flow, run as VoIPBin's flow-manager runs it, for the actions voicebot uses."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Protocol

import requests

from .base import Json
from .events import call_event_data


class Platform(Protocol):
    """What a flow asks of the fake (``FakeVoipbin``)."""

    lock: threading.Lock
    calls: dict[str, Json]
    webhook_url: str | None

    def deliver(self, url: str, event_type: str, data: Json, *, method: str = ...,
                timeout: float = ...) -> Any: ...

    def hang_up(self, call_id: str, by: str = ..., reason: str = ...) -> Json: ...

    def answer_call(self, call_id: str | None = ..., *, direction: str = ..., caller: str = ...,
                    callee: str = ...) -> str: ...

    def fetch(self, url: str, call_id: str, activeflow_id: str | None = ..., *, method: str = ...) -> Any: ...


class FlowRunner:
    """Runs a call's flow as VoIPBin's flow-manager does, for the actions voicebot uses.

    ``fetch`` pushes the answer's actions to run next; ``answer`` makes the
    call progressing (and sends ``call_progressing``); ``sleep`` waits
    (``time_scale`` shortens it for tests); ``hangup`` ends the call; ``connect``
    is recorded. When the flow runs out of actions, VoIPBin hangs up the call.
    """

    def __init__(self, voipbin: Platform, webhook_url: str, actions: list[Json], *,
                 time_scale: float = 0.001, max_steps: int = 200,
                 on_step: Callable[[Json], None] | None = None) -> None:
        self.voipbin = voipbin
        self.webhook_url = webhook_url
        self.queue = [dict(a) for a in actions]
        self.time_scale = time_scale
        self.max_steps = max_steps
        self.on_step = on_step
        self.ran: list[str] = []
        self.connected: list[Json] = []
        self.ended_because = ""

    def run(self, call_id: str) -> str:
        """Run until the call ends or ``max_steps``; why it stopped."""
        with self.voipbin.lock:
            self.voipbin.calls.setdefault(call_id, call_event_data(call_id, "ringing"))
        if self.voipbin.webhook_url is None:
            self.voipbin.webhook_url = self.webhook_url
        for _ in range(self.max_steps):
            if self.voipbin.calls[call_id]["status"] == "hangup":
                return self._end("hung up")
            if not self.queue:
                self.voipbin.deliver(self.webhook_url, "call_hangup", self.voipbin.hang_up(call_id, by="local"))
                return self._end("the flow ran out of actions")
            action = self.queue.pop(0)
            self.ran.append(action["type"])
            if self.on_step:
                self.on_step(action)
            option = action.get("option") or {}
            if action["type"] == "fetch":
                try:
                    answer = self.voipbin.fetch(option["event_url"], call_id, method=option.get("event_method", "POST"))
                    pushed = answer.json() if answer.status_code == 200 else None
                except (requests.RequestException, ValueError):
                    pushed = None
                if not isinstance(pushed, list):
                    self.voipbin.deliver(self.webhook_url, "call_hangup", self.voipbin.hang_up(call_id, by="local"))
                    return self._end("fetch failed: the flow stopped")
                self.queue = pushed + self.queue
            elif action["type"] == "answer":
                self.voipbin.answer_call(call_id)
                self.voipbin.deliver(self.webhook_url, "call_progressing", dict(self.voipbin.calls[call_id]))
            elif action["type"] == "sleep":
                time.sleep(option.get("duration", 0) / 1000 * self.time_scale)
            elif action["type"] == "hangup":
                self.voipbin.deliver(self.webhook_url, "call_hangup", self.voipbin.hang_up(call_id, by="local"))
                return self._end("hangup action")
            elif action["type"] == "connect":
                self.connected.append(option)
        return self._end("still up after max_steps")

    def _end(self, why: str) -> str:
        self.ended_because = why
        return why

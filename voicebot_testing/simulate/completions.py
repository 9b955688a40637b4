"""The side of a front end that uses voicebot as its custom LLM, for ``voicebot simulate``: each dialect's
requests (the whole conversation each time, the call named its way, the platform's own tools offered), its
streamed answers read, and its end-of-call report."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

DIALECTS = ("openai", "vapi", "elevenlabs")
MAX_ANSWER_BYTES = 1 << 20
PREFIX = {"openai": "/openai/v1", "vapi": "/vapi", "elevenlabs": "/elevenlabs"}
TOOLS = {"openai": ("end_call", "transfer_call"), "vapi": ("endCall", "transferCall"),
         "elevenlabs": ("end_call", "transfer_to_number")}


def request(dialect: str, call_id: str, messages: list[dict[str, str]],
            token: str) -> tuple[str, bytes, dict[str, str]]:
    """(path, body, headers) of one streamed turn of ``call_id`` whose conversation so far is ``messages``."""
    body: dict[str, Any] = {"model": "voicebot", "stream": True, "messages": messages,
                            "tools": [{"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}
                                      for name in TOOLS[dialect]]}
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    if dialect == "vapi":
        body.update(call={"id": call_id}, customer={"number": "+15550000000"})
    elif dialect == "elevenlabs":
        headers.update({"X-Conversation-Id": call_id, "X-Caller-Number": "+15550000000"})
    else:
        headers.update({"X-Call-Id": call_id, "X-Caller-Number": "+15550000000"})
    return PREFIX[dialect] + "/chat/completions", json.dumps(body).encode(), headers


def answer_of(raw: bytes) -> tuple[str, list[str]]:
    """The words and the tool calls of a streamed answer; ValueError when it is not one (no [DONE])."""
    text, tools, done = [], [], False
    for event in raw.decode("utf-8", "replace").split("\n\n"):
        if event.startswith("data: [DONE]"):
            done = True
        elif event.startswith("data: {"):
            for choice in json.loads(event[6:]).get("choices", []):
                text.append(choice["delta"].get("content") or "")
                tools += [c["function"]["name"] for c in choice["delta"].get("tool_calls") or []]
    if not done:
        raise ValueError("the answer did not end with data: [DONE]")
    return "".join(text).strip(), tools


def end_report(dialect: str, call_id: str, token: str,
               elevenlabs_secret: str) -> tuple[str, bytes, dict[str, str]] | None:
    """The platform's report that the call has ended, as it sends it; None where it has none to send."""
    if dialect == "vapi":
        body = json.dumps({"message": {"type": "end-of-call-report", "endedReason": "customer-ended-call",
                                       "call": {"id": call_id}}}).encode()
        return "/vapi/events", body, {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    if dialect == "elevenlabs" and elevenlabs_secret:
        body = json.dumps({"type": "post_call_transcription", "event_timestamp": int(time.time()),
                           "data": {"conversation_id": call_id, "status": "done"}}).encode()
        at = int(time.time())
        signature = hmac.new(elevenlabs_secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
        return "/elevenlabs/post-call", body, {"Content-Type": "application/json",
                                               "ElevenLabs-Signature": f"t={at},v0={signature}"}
    return None


class StreamingClient:
    """Streamed answers read whole, through voicebot's own HTTP layer (libcurl frames them: chunked, or
    to the connection's close), on a pool of threads as wide as the calls, so that no call waits for
    another's answer."""

    def __init__(self, calls: int) -> None:
        from voicebot.egress import HTTP

        self.http = HTTP(proxies=False, pool_size=max(8, calls))
        self.pool = ThreadPoolExecutor(max_workers=max(8, calls), thread_name_prefix="simulate")

    async def post(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> tuple[int, bytes]:
        """(status, body); raises EgressTimeout past ``timeout``, EgressError when it cannot be had."""
        from voicebot.egress import Cutoff

        def post() -> tuple[int, bytes]:
            answer = self.http.request("POST", url, body=body, headers=headers, limit=MAX_ANSWER_BYTES,
                                       cutoff=Cutoff(time.monotonic() + timeout))
            return answer.status, answer.body

        return await asyncio.get_running_loop().run_in_executor(self.pool, post)

    def close(self) -> None:
        self.pool.shutdown(wait=False)
        self.http.close()

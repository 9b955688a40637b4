"""The fake Messages API server: its handler, its faults (slow, overloaded, hanging, trickling), its stream."""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from typing import Any

from voicebot.llm.offline import schema_example

from ..loopback import JSONHandler, LoopbackServer
from .cache import PromptCache
from .replies import FURTHER_SENTENCES, Pacer, _message, _text_of, echo_reply, tool_answers, tool_to_use
from .validation import InvalidRequest, known_models, validate


class FakeMessagesAPI(LoopbackServer):
    """``with FakeMessagesAPI() as fake: Anthropic(base_url=fake.url, api_key=fake.api_key)``."""

    thread_name = "fake-llm"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, api_key: str = "test-key",
                 latency: float = 0.0, jitter: float = 0.0, fail_rate: float = 0.0,
                 hang_rate: float = 0.0, hang_seconds: float = 120.0, seed: int = 0,
                 record: bool = True) -> None:
        super().__init__((host, port), _Handler)
        self.api_key = api_key
        self.latency = latency
        self.jitter = jitter
        self.fail_rate = fail_rate
        self.hang_rate = hang_rate
        self.hang_seconds = hang_seconds
        self.trickle = 0.0
        # A reply of more than one sentence, written at a model's pace: the
        # first sentence after ``latency``, each further one ``sentence_gap`` later.
        self.sentences = 1
        self.sentence_gap = 0.0
        self.break_after = 0  # streamed replies: the connection drops after this many sentences (0: never)
        # Forced tool uses (an analysis) answered with an input that does not fit the tool's schema, from now.
        self.misfits = 0
        self.record = record
        self.models = known_models()
        self.cache = PromptCache()
        self.requests: list[dict[str, Any]] = []
        self.peers: list[tuple[str, int]] = []  # the client address of each recorded request
        self.served = 0
        self._random = random.Random(seed)
        self._mutex = threading.Lock()

    @property
    def url(self) -> str:
        return self.base_url

    def reset(self) -> None:
        """Back to a fast, healthy API with no recorded requests."""
        with self._mutex:
            self.latency = self.jitter = self.fail_rate = self.hang_rate = self.trickle = 0.0
            self.sentences, self.sentence_gap, self.break_after = 1, 0.0, 0
            self.misfits = 0
            self.requests.clear()
            self.peers.clear()
            self.cache = PromptCache()

    def _draw(self, body: dict[str, Any], peer: tuple[str, int]) -> tuple[str, float]:
        """Decide this request's fate: 'ok', 'fail' or 'hang', and its delay."""
        with self._mutex:
            self.served += 1
            if self.record:
                self.requests.append(body)
                self.peers.append(peer)
            roll = self._random.random()
            delay = max(0.0, self.latency + self._random.uniform(-self.jitter, self.jitter))
        if roll < self.hang_rate:
            return "hang", self.hang_seconds
        if roll < self.hang_rate + self.fail_rate:
            return "fail", delay
        return "ok", delay


class _Handler(JSONHandler):
    server: FakeMessagesAPI

    def _send_json(self, status: int, payload: dict[str, Any]) -> None:
        self.send_json(status, payload, **{"request-id": "req_" + uuid.uuid4().hex[:24]})

    def _error(self, status: int, kind: str, message: str) -> None:
        self._send_json(status, {"type": "error", "error": {"type": kind, "message": message}})

    def do_GET(self) -> None:
        # GET /v1/models/{model}: what a key check asks (it spends no tokens).
        path = self.path.split("?")[0]
        if not path.startswith("/v1/models/"):
            return self._error(404, "not_found_error", "Not found")
        key = self.headers.get("x-api-key") or self.headers.get("Authorization", "").removeprefix("Bearer ")
        if key != self.server.api_key:
            return self._error(401, "authentication_error", "invalid x-api-key")
        model = path.removeprefix("/v1/models/")
        if not model.startswith("claude-"):
            return self._error(404, "not_found_error", f"model: {model}")
        self._send_json(200, {"type": "model", "id": model, "display_name": model,
                              "created_at": "2026-01-01T00:00:00Z"})

    def do_POST(self) -> None:
        raw = self.read_body()
        if self.path.split("?")[0] != "/v1/messages":
            return self._error(404, "not_found_error", "Not found")
        key = self.headers.get("x-api-key") or self.headers.get("Authorization", "").removeprefix("Bearer ")
        if key != self.server.api_key:
            return self._error(401, "authentication_error", "invalid x-api-key")
        if not self.headers.get("anthropic-version"):
            return self._error(400, "invalid_request_error", "anthropic-version: header is required")
        try:
            body = json.loads(raw)
            validate(body)
        except ValueError:
            return self._error(400, "invalid_request_error", "body is not valid JSON")
        except InvalidRequest as exc:
            return self._error(400, "invalid_request_error", str(exc))
        if body["model"] not in self.server.models:
            return self._error(404, "not_found_error", f"model: {body['model']}")
        fate, delay = self.server._draw(body, self.client_address[:2])
        if delay:
            self.server.pause(delay)
        if fate == "fail":
            return self._error(529, "overloaded_error", "Overloaded")
        text = echo_reply(body["messages"])
        if fate == "hang":
            self.close_connection = True  # hung up without a word, like a dead upstream
            return
        if (body.get("tool_choice") or {}).get("type") == "tool":
            return self._send_json(200, self._forced_tool_use(body, body["tool_choice"]["name"]))
        answered = tool_answers(body["messages"])
        if answered:
            text = f"{text} {answered}"
        more = [FURTHER_SENTENCES[i % len(FURTHER_SENTENCES)] for i in range(self.server.sentences - 1)]
        message = _message(body, " ".join([text, *more]))
        tool = tool_to_use(body)
        if tool and tool not in ("end_call", "transfer_call"):
            message = _message(body, "Let me check.")  # what a model says before it looks something up
        message["usage"].update(self.server.cache.usage(body, time.monotonic()))
        if tool:
            words = _text_of(body["messages"][-1])
            message["content"].append({"type": "tool_use", "id": "toolu_" + uuid.uuid4().hex[:24], "name": tool,
                                       "input": {"reason": "the caller asked", "query": words}})
            message["stop_reason"] = "tool_use"
        if body.get("stream"):
            return self._stream(message)
        if more and self.server.sentence_gap:
            self.server.pause(self.server.sentence_gap * len(more))  # the whole reply, written
        if self.server.trickle:
            return self._trickle(message)
        self._send_json(200, message)

    def _forced_tool_use(self, body: dict[str, Any], name: str) -> dict[str, Any]:
        """What a model answers when it must use ``name``: its input shaped by the tool's schema.

        A ``summary`` says the caller's marked words, so a test can tell whose call it read; with
        ``misfits`` set, the input leaves out what the schema requires (a model that strays).
        """
        schema = next(t["input_schema"] for t in body["tools"] if t.get("name") == name)
        answer = schema_example(schema)
        if isinstance(answer, dict) and "summary" in answer:
            # What the caller's lines were (a transcript's "Caller: ..." lines), as a summary would tell it.
            said = " ".join(line for message in body["messages"] for line in _text_of(message).splitlines()
                            if line.startswith("Caller:"))
            answer["summary"] = "Summary: " + echo_reply([{"role": "user", "content": said or "-"}])
        with self.server._mutex:
            misfit = self.server.misfits > 0
            self.server.misfits -= 1 if misfit else 0
        if misfit:
            answer = {}
        message = _message(body, "")
        message["content"] = [{"type": "tool_use", "id": "toolu_" + uuid.uuid4().hex[:24], "name": name,
                               "input": answer}]
        message["stop_reason"] = "tool_use"
        message["usage"].update(self.server.cache.usage(body, time.monotonic()))
        message["usage"]["output_tokens"] = len(json.dumps(answer).split())
        return message

    def _trickle(self, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        for start in range(0, len(data), 8):
            self.wfile.write(data[start:start + 8])
            self.wfile.flush()
            self.server.pause(self.server.trickle)

    def _stream(self, message: dict[str, Any]) -> None:
        """The Messages API's server-sent events: text a word at a time, a pause between sentences, then tools."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        blocks, usage = message["content"], message["usage"]
        start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
        self._event("message_start", {"type": "message_start", "message": start})
        self._event("ping", {"type": "ping"})
        for index, block in enumerate(blocks):
            if block["type"] == "text":
                self._event("content_block_start", {"type": "content_block_start", "index": index,
                                                    "content_block": {"type": "text", "text": ""}})
                pacer = Pacer(self.server.sentence_gap, self.server.break_after, self.wfile.flush,
                              self.server.pause)
                for piece in pacer.words(block["text"]):
                    self._event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": {
                        "type": "text_delta", "text": piece}})
                if pacer.broken:
                    self.close_connection = True  # an upstream that dies mid-reply
                    return
            else:
                self._event("content_block_start", {"type": "content_block_start", "index": index,
                                                    "content_block": {**block, "input": {}}})
                self._event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": {
                    "type": "input_json_delta", "partial_json": json.dumps(block["input"])}})
            self._event("content_block_stop", {"type": "content_block_stop", "index": index})
        self._event("message_delta", {"type": "message_delta",
                                      "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                                      "usage": {"output_tokens": usage["output_tokens"]}})
        self._event("message_stop", {"type": "message_stop"})
        self.wfile.flush()
        self.close_connection = True

    def _event(self, name: str, data: dict[str, Any]) -> None:
        self.wfile.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())


# What the fake says after its echo when asked for longer replies (``sentences``): no markers in them.


def serve(host: str, port: int, *, sentences: int = 1, sentence_gap: float = 0.0, **options: Any) -> None:
    """Run in the foreground until interrupted (``voicebot fake-llm``)."""
    server = FakeMessagesAPI(host, port, record=False, **options)
    server.sentences, server.sentence_gap = max(1, sentences), sentence_gap
    server.run_in_foreground(f"fake Messages API on {server.url} (api key {server.api_key!r})")

"""A loopback server that speaks the Anthropic Messages API, for tests and benchmarks.

It is as strict as the real API about what it accepts (a missing
``max_tokens``, a role other than user/assistant, empty content, no API key
or version header: all 4xx), so code that passes against it sends requests
the real API takes. Its replies echo the markers (words starting with ``mk``)
of every user message it was sent, in order, so a caller can check that a
reply was made from exactly its own call's history. It can be made slow
(``latency``, ``jitter``), overloaded (``fail_rate``: 529) or hanging
(``hang_rate``) or trickle its answer a few bytes at a time (``trickle``,
seconds between pieces), which no per-read timeout catches.

Offered the call tools, it uses them as a model would: ``end_call`` when the
caller's last words say goodbye, ``transfer_call`` when they ask for a human,
with real ``tool_use`` blocks; and it refuses, as the real API does, a history
where a ``tool_use`` is not answered by a ``tool_result`` in the next message.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
import uuid
from typing import Any

from ..llm.offline import schema_example
from .loopback import JSONHandler, LoopbackServer

MARKER = re.compile(r"\bmk[0-9A-Za-z]+\b")
DEFAULT_REPLY = "I can help with that. Could you give me a bit more detail?"
_GOODBYE = re.compile(r"\b(good ?bye|bye)\b", re.I)
_PERSON = re.compile(r"\b(human|person|agent|representative)\b", re.I)
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")

_TOP_LEVEL_FIELDS = frozenset({
    "model", "max_tokens", "messages", "system", "stream", "temperature", "top_p", "top_k",
    "stop_sequences", "metadata", "tools", "tool_choice", "thinking", "service_tier",
    "container", "mcp_servers", "context_management", "output_config", "output_format",
    "inference_geo", "cache_control",
})


class InvalidRequest(Exception):
    pass


def known_models() -> frozenset[str]:
    """The model names the pinned anthropic SDK knows: the real API answers 404 to others."""
    import typing

    from anthropic.types.model import Model

    def names(kind: Any) -> list[str]:
        return [a for arg in typing.get_args(kind) for a in ([arg] if isinstance(arg, str) else names(arg))]
    return frozenset(names(Model))


def echo_reply(messages: list[dict[str, Any]]) -> str:
    """'Heard mk1 mk2.' for the markers of every user message in order."""
    markers = [m for msg in messages if msg["role"] == "user" for m in MARKER.findall(_text_of(msg))]
    return "Heard " + " ".join(markers) + "." if markers else DEFAULT_REPLY


def _text_of(message: dict[str, Any]) -> str:
    content = message["content"]
    if isinstance(content, str):
        return content
    return " ".join(block.get("text", "") for block in content if block.get("type") == "text")


_ASKS_TOOL = re.compile(r"\btool:([a-zA-Z0-9_-]{1,64})")


def tool_to_use(body: dict[str, Any]) -> str | None:
    """The tool a model would use on the caller's last words, if it was offered and allowed.

    ``tool:<name>`` in the words asks for any declared tool; "goodbye" and "a
    human" for the call tools.
    """
    if (body.get("tool_choice") or {}).get("type") == "none":
        return None
    offered = {t.get("name") for t in body.get("tools") or []}
    last = _text_of(body["messages"][-1]) if body["messages"][-1]["role"] == "user" else ""
    asked = _ASKS_TOOL.search(last)
    if asked and asked.group(1) in offered:
        return asked.group(1)
    if "transfer_call" in offered and _PERSON.search(last):
        return "transfer_call"
    if "end_call" in offered and _GOODBYE.search(last):
        return "end_call"
    return None


def tool_answers(messages: list[dict[str, Any]]) -> str:
    """What the tools answered in the last message, as a model would repeat it."""
    results = [b for b in _blocks(messages[-1]) if b.get("type") == "tool_result"]
    if _text_of(messages[-1]).strip():
        return ""  # the caller spoke since: those results are old news
    said = []
    for result in results:
        content = result.get("content")
        text = content if isinstance(content, str) else " ".join(
            c.get("text", "") for c in content or [] if isinstance(c, dict))
        said.append(("The tool failed: " if result.get("is_error") else "The tool said: ") + text[:300])
    return " ".join(said)


def _blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    return content if isinstance(content, list) else []


def _validate_tool_choice(body: dict[str, Any]) -> None:
    choice = body.get("tool_choice")
    if choice is None:
        return
    if not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none"):
        raise InvalidRequest("tool_choice: Input tag does not match any of the expected tags: 'auto', 'any', "
                             "'tool', 'none'")
    if choice["type"] == "tool":
        offered = {t.get("name") for t in body.get("tools") or [] if isinstance(t, dict)}
        if not isinstance(choice.get("name"), str):
            raise InvalidRequest("tool_choice.tool.name: Field required")
        if choice["name"] not in offered:
            raise InvalidRequest(f"tool_choice: tool '{choice['name']}' not found in tools")


def _validate_tools(body: dict[str, Any]) -> None:
    _validate_tool_choice(body)
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise InvalidRequest("tools: Input should be a valid list")
        for index, tool in enumerate(tools):
            if not isinstance(tool, dict) or not _TOOL_NAME.match(str(tool.get("name", ""))):
                raise InvalidRequest(f"tools.{index}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'")
            schema = tool.get("input_schema")
            if not isinstance(schema, dict) or schema.get("type") != "object":
                raise InvalidRequest(f"tools.{index}.input_schema: Input should be an object schema")
    messages = body["messages"]
    uses_tools = any(b.get("type") in ("tool_use", "tool_result") for m in messages for b in _blocks(m))
    if uses_tools and not tools:
        raise InvalidRequest("Requests which include `tool_use` or `tool_result` blocks must define tools.")
    for index, message in enumerate(messages):
        used = [b.get("id") for b in _blocks(message) if b.get("type") == "tool_use"]
        answered = [b.get("tool_use_id") for b in _blocks(message) if b.get("type") == "tool_result"]
        before = [b.get("id") for b in _blocks(messages[index - 1]) if b.get("type") == "tool_use"] if index else []
        if answered and (message["role"] != "user" or set(answered) - set(before)):
            raise InvalidRequest(f"messages.{index}.content: unexpected `tool_use_id` found in `tool_result` "
                                 "blocks. Each `tool_result` block must have a corresponding `tool_use` block "
                                 "in the previous message.")
        if used and message["role"] == "assistant" and index < len(messages) - 1:
            following = messages[index + 1]
            results = {b.get("tool_use_id") for b in _blocks(following) if b.get("type") == "tool_result"}
            if following["role"] != "user" or set(used) - results:
                raise InvalidRequest(f"messages.{index + 1}: `tool_use` ids were found without `tool_result` "
                                     "blocks immediately after. Each `tool_use` block must have a "
                                     "corresponding `tool_result` block in the next message.")


def validate(body: Any) -> None:
    """Raise InvalidRequest for what the real Messages API answers with 400."""
    if not isinstance(body, dict):
        raise InvalidRequest("body must be a JSON object")
    extra = set(body) - _TOP_LEVEL_FIELDS
    if extra:
        raise InvalidRequest(f"{sorted(extra)[0]}: Extra inputs are not permitted")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise InvalidRequest("model: Field required")
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise InvalidRequest("max_tokens: Field required")
    if max_tokens < 1:
        raise InvalidRequest("max_tokens: Input should be greater than or equal to 1")
    system = body.get("system")
    if system is not None and not isinstance(system, (str, list)):
        raise InvalidRequest("system: Input should be a valid string or list of text blocks")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages: at least one message is required")
    first = messages[0]
    if not isinstance(first, dict) or first.get("role") != "user":
        raise InvalidRequest("messages: first message must use the \"user\" role")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or set(message) - {"role", "content"}:
            raise InvalidRequest(f"messages.{index}: must have only role and content")
        if message.get("role") not in ("user", "assistant"):
            raise InvalidRequest(f"messages.{index}.role: Input should be 'user' or 'assistant'")
        content = message.get("content")
        final_assistant = index == len(messages) - 1 and message["role"] == "assistant"
        if isinstance(content, str):
            if not content.strip() and not final_assistant:
                raise InvalidRequest(f"messages.{index}: all messages must have non-empty content "
                                     "except for the optional final assistant message")
        elif isinstance(content, list):
            if not content and not final_assistant:
                raise InvalidRequest(f"messages.{index}: all messages must have non-empty content "
                                     "except for the optional final assistant message")
            for block in content:
                if not isinstance(block, dict) or "type" not in block:
                    raise InvalidRequest(f"messages.{index}.content: blocks need a type")
                if block["type"] == "text" and not str(block.get("text", "")).strip():
                    raise InvalidRequest(f"messages.{index}.content: text content blocks must "
                                         "contain non-whitespace text")
                if block["type"] == "tool_use" and (message["role"] != "assistant" or not block.get("id")
                                                    or not isinstance(block.get("input"), dict)):
                    raise InvalidRequest(f"messages.{index}.content: tool_use blocks need an id and an input "
                                         "object, in an assistant message")
        else:
            raise InvalidRequest(f"messages.{index}.content: Input should be a string or a list")
    _validate_tools(body)


class PromptCache:
    """The API's prompt caching, as its documentation states the rules, for ``usage``.

    The prompt is read in order (tools, system, messages), block by block; a
    ``cache_control`` block ends a cacheable prefix. A request reads the
    longest prefix it shares with one cached in the last 5 minutes (checked at
    block boundaries up to 20 blocks before each of its breakpoints) and
    writes each breakpoint's prefix of at least ``min_tokens``. A token here is
    a word, which is all a benchmark of the billing needs.
    """

    LOOKBACK = 20

    def __init__(self, min_tokens: int = 1024, ttl: float = 300.0) -> None:
        self.min_tokens = min_tokens
        self.ttl = ttl
        self.entries: dict[str, float] = {}  # prefix digest -> expiry
        self._lock = threading.Lock()

    def usage(self, body: dict[str, Any], now: float) -> dict[str, int]:
        import hashlib

        blocks = _prompt_blocks(body)
        digests, totals, marks = [], [], []
        digest, total = hashlib.sha256(), 0
        for index, (text, marked) in enumerate(blocks):
            digest.update(text.encode("utf-8", "surrogatepass") + b"\x00")
            total += len(text.split())
            digests.append(digest.copy().hexdigest())
            totals.append(total)
            if marked:
                marks.append(index)
        read = written = 0
        with self._lock:
            self.entries = {k: t for k, t in self.entries.items() if t > now}
            hit = -1
            for mark in marks:
                for index in range(mark, max(-1, mark - self.LOOKBACK), -1):
                    if digests[index] in self.entries and index > hit:
                        hit = index
                        break
            if hit >= 0:
                read = totals[hit]
                self.entries[digests[hit]] = now + self.ttl
            for mark in marks:
                if mark > hit and totals[mark] >= self.min_tokens:
                    self.entries[digests[mark]] = now + self.ttl
                    written = totals[mark] - read
        return {"input_tokens": total - read - written, "cache_creation_input_tokens": written,
                "cache_read_input_tokens": read}


def _prompt_blocks(body: dict[str, Any]) -> list[tuple[str, bool]]:
    """The prompt in the order the API caches it, as (text, ends a breakpoint)."""
    blocks: list[tuple[str, bool]] = []
    for tool in body.get("tools") or []:
        blocks.append((json.dumps({k: v for k, v in tool.items() if k != "cache_control"}, sort_keys=True),
                       "cache_control" in tool))
    system = body.get("system")
    if isinstance(system, str):
        blocks.append((system, False))
    for block in system if isinstance(system, list) else []:
        blocks.append((block.get("text", ""), "cache_control" in block))
    for message in body["messages"]:
        content = message["content"]
        if isinstance(content, str):  # the API reads a string as one text block
            content = [{"type": "text", "text": content}]
        for block in content:
            text = json.dumps({k: v for k, v in block.items() if k != "cache_control"}, sort_keys=True)
            blocks.append((f"{message['role']}: {text}", "cache_control" in block))
    return blocks


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
                previous, sentences = "", 0
                for i, word in enumerate(block["text"].split(" ")):
                    if i and previous.endswith((".", "!", "?")):
                        sentences += 1
                        if sentences == self.server.break_after:
                            self.wfile.flush()
                            self.close_connection = True  # an upstream that dies mid-reply
                            return
                        if self.server.sentence_gap:
                            self.wfile.flush()
                            self.server.pause(self.server.sentence_gap)
                    self._event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": {
                        "type": "text_delta", "text": word if i == 0 else " " + word}})
                    previous = word
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
FURTHER_SENTENCES = ("I have noted that.", "Is there anything else I can help you with today?",
                     "Take your time.")


def _message(body: dict[str, Any], text: str) -> dict[str, Any]:
    prompt_words = sum(len(_text_of(m).split()) for m in body["messages"])
    return {
        "id": "msg_" + uuid.uuid4().hex[:24],
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": prompt_words, "output_tokens": len(text.split())},
    }


def serve(host: str, port: int, *, sentences: int = 1, sentence_gap: float = 0.0, **options: Any) -> None:
    """Run in the foreground until interrupted (``voicebot fake-llm``)."""
    server = FakeMessagesAPI(host, port, record=False, **options)
    server.sentences, server.sentence_gap = max(1, sentences), sentence_gap
    server.run_in_foreground(f"fake Messages API on {server.url} (api key {server.api_key!r})")

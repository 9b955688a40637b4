"""A loopback server that speaks OpenAI's Chat Completions, as strictly as OpenAI does, for tests and trials.

What OpenAI refuses, it refuses with OpenAI's own error body: no or a wrong
bearer key (401), an unknown model (404), a field the API does not take, a
``tool_choice`` without ``tools``, ``stream_options`` without ``stream``, and
above all a malformed tool turn (400): an assistant message with
``tool_calls`` must be followed by one ``tool`` message for each call id,
and a ``tool`` message must answer such a call. Its replies are the fake
Messages API's (``voicebot_testing.fake_llm``): the markers of every user
message echoed, the call tools used on a goodbye or a request for a person,
a tool's answer repeated, a forced tool filled from its schema; streamed as
``chat.completion.chunk`` events a word at a time, ``data: [DONE]`` last.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
import uuid
from typing import Any

from voicebot.llm.offline import schema_example

from .fake_llm.replies import FURTHER_SENTENCES, Pacer, echo_reply, tool_answers, tool_to_use
from .loopback import JSONHandler, LoopbackServer

FIELDS = frozenset({"model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "n",
                    "stream", "stream_options", "stop", "presence_penalty", "frequency_penalty", "logit_bias",
                    "user", "tools", "tool_choice", "parallel_tool_calls", "response_format", "seed", "metadata",
                    "store", "logprobs", "top_logprobs", "service_tier", "reasoning_effort"})
ROLES = ("system", "developer", "user", "assistant", "tool")
_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


class BadRequest(Exception):
    """What OpenAI answers 400 ``invalid_request_error``, with the parameter at fault."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def validate(body: Any) -> None:
    """Raise BadRequest for what OpenAI's Chat Completions would refuse."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    for name in body:
        if name not in FIELDS:
            raise BadRequest(f"Unrecognized request argument supplied: {name}")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise BadRequest("you must provide a model parameter", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty array", "messages")
    _validate_turns(messages)
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list) or not all(_is_function(t) for t in tools):
            raise BadRequest("each tool must be {'type': 'function', 'function': {'name', 'parameters'}}", "tools")
    names = {t["function"]["name"] for t in tools or []}
    choice = body.get("tool_choice")
    if choice is not None:
        if not tools:
            raise BadRequest("Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are "
                             "specified.", "tool_choice")
        if isinstance(choice, dict):
            wanted = (choice.get("function") or {}).get("name") if choice.get("type") == "function" else None
            if wanted not in names:
                raise BadRequest(f"Invalid value for 'tool_choice': no function named {wanted!r} was specified "
                                 "in 'tools'", "tool_choice")
        elif choice not in ("none", "auto", "required"):
            raise BadRequest(f"Invalid value: {choice!r}. Supported values are: 'none', 'auto', and 'required'.",
                             "tool_choice")
    if body.get("stream_options") is not None and not body.get("stream"):
        raise BadRequest("The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                         "stream_options")


def _validate_turns(messages: list[Any]) -> None:
    waiting: set[str] = set()  # tool calls of the last assistant message not answered yet
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise BadRequest(f"Invalid value for '{where}.role': must be one of {', '.join(ROLES)}", where)
        role, content = message["role"], message.get("content")
        if role == "tool":
            call_id = message.get("tool_call_id")
            if call_id not in waiting:
                raise BadRequest("Invalid parameter: messages with role 'tool' must be a response to a preceeding "
                                 "message with 'tool_calls'.", f"{where}.role")
            waiting.discard(call_id)
            continue
        if waiting:
            raise BadRequest("An assistant message with 'tool_calls' must be followed by tool messages responding "
                             f"to each 'tool_call_id'. The following tool_call_ids did not have response messages: "
                             f"{', '.join(sorted(waiting))}", f"{where}.role")
        calls = message.get("tool_calls")
        if role == "assistant" and calls is not None:
            if not isinstance(calls, list) or not calls or not all(_is_call(c) for c in calls):
                raise BadRequest(f"Invalid '{where}.tool_calls': each must have an id, type 'function' and a "
                                 "function with a name and string arguments", f"{where}.tool_calls")
            waiting = {c["id"] for c in calls}
        elif content is None or content == "" or content == []:
            raise BadRequest(f"Invalid '{where}.content': a {role} message must have content", f"{where}.content")
    if waiting:
        raise BadRequest("An assistant message with 'tool_calls' must be followed by tool messages responding to "
                         f"each 'tool_call_id'. The following tool_call_ids did not have response messages: "
                         f"{', '.join(sorted(waiting))}", "messages")


def _is_function(tool: Any) -> bool:
    function = tool.get("function") if isinstance(tool, dict) else None
    return (tool.get("type") == "function" and isinstance(function, dict)
            and isinstance(function.get("name"), str) and bool(_NAME.match(function["name"]))
            and isinstance(function.get("parameters", {}), dict))


def _is_call(call: Any) -> bool:
    function = call.get("function") if isinstance(call, dict) else None
    return (isinstance(call.get("id"), str) and call.get("type") == "function" and isinstance(function, dict)
            and isinstance(function.get("name"), str) and isinstance(function.get("arguments"), str))


def as_messages_api(body: dict[str, Any]) -> dict[str, Any]:
    """The request as the fake Messages API's reply rules read it: the same turns, in content blocks."""
    messages: list[dict[str, Any]] = []
    for message in body["messages"]:
        role, content = message["role"], message.get("content")
        text = content if isinstance(content, str) else " ".join(
            p.get("text", "") for p in content or [] if isinstance(p, dict))
        if role == "tool":
            block = {"type": "tool_result", "tool_use_id": message["tool_call_id"], "content": text}
            if messages and messages[-1]["role"] == "user" and isinstance(messages[-1]["content"], list):
                messages[-1]["content"].append(block)
            else:
                messages.append({"role": "user", "content": [block]})
        elif role in ("user", "assistant"):
            messages.append({"role": role, "content": text or ""})
    tools = [{"name": t["function"]["name"]} for t in body.get("tools") or []]
    choice = {"type": "none"} if body.get("tool_choice") == "none" else {}
    return {"model": body["model"], "messages": messages, "tools": tools, "tool_choice": choice}


class FakeChatCompletions(LoopbackServer):
    """``with FakeChatCompletions() as fake: OPENAI_BASE_URL=fake.url, OPENAI_API_KEY=fake.api_key``."""

    thread_name = "fake-openai"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, api_key: str = "test-openai-key",
                 models: tuple[str, ...] = ("test-model",)) -> None:
        super().__init__((host, port), _Handler)
        self.api_key = api_key
        self.models = models
        self.latency = 0.0
        self.sentences = 1
        self.sentence_gap = 0.0
        self.fail_next: list[int] = []  # statuses to answer the next requests with (429 with Retry-After: 1)
        self.fail_rate = 0.0  # share of requests answered 500
        self.break_after = 0  # streamed replies: the connection drops after this many sentences (0: never)
        self.requests: list[dict[str, Any]] = []  # every request it accepted
        self.refused: list[tuple[int, str]] = []  # every request it refused: (status, why)
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return self.base_url + "/v1"

    def reset(self) -> None:
        with self.lock:
            self.latency, self.sentences, self.sentence_gap = 0.0, 1, 0.0
            self.fail_rate, self.break_after = 0.0, 0
            self.fail_next.clear()
            self.requests.clear()
            self.refused.clear()


class _Handler(JSONHandler):
    server: FakeChatCompletions

    def _error(self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
               code: str | None = None, **headers: str) -> None:
        with self.server.lock:
            self.server.refused.append((status, message))
        self.send_json(status, {"error": {"message": message, "type": kind, "param": param, "code": code}}, **headers)

    def _authorized(self) -> bool:
        if self.headers.get("Authorization", "") == f"Bearer {self.server.api_key}":
            return True
        self._error(401, "Incorrect API key provided.", code="invalid_api_key")
        return False

    def do_GET(self) -> None:
        if self.path.split("?")[0] != "/v1/models":
            return self._error(404, "Not found")
        if self._authorized():
            self.send_json(200, {"object": "list", "data": [{"id": m, "object": "model", "created": 0,
                                                             "owned_by": "fake"} for m in self.server.models]})

    def do_POST(self) -> None:
        raw = self.read_body()
        if self.path.split("?")[0] != "/v1/chat/completions":
            return self._error(404, "Not found")
        if not self._authorized():
            return None
        try:
            body = json.loads(raw)
            validate(body)
        except ValueError:
            return self._error(400, "We could not parse the JSON body of your request.")
        except BadRequest as exc:
            return self._error(400, str(exc), param=exc.param)
        if body["model"] not in self.server.models:
            return self._error(404, f"The model `{body['model']}` does not exist or you do not have access to it.",
                               code="model_not_found")
        with self.server.lock:
            self.server.requests.append(body)
            failing = self.server.fail_next.pop(0) if self.server.fail_next else None
            if failing is None and self.server.fail_rate and random.random() < self.server.fail_rate:
                failing = 500
        if failing:
            return self._error(failing, "Rate limit reached" if failing == 429 else "The server had an error",
                               kind="requests" if failing == 429 else "server_error", **{"Retry-After": "1"})
        if self.server.latency:
            self.server.pause(self.server.latency)
        text, calls = self._answer(body)
        if body.get("stream"):
            return self._stream(body, text, calls)
        if self.server.sentences > 1 and self.server.sentence_gap:
            self.server.pause(self.server.sentence_gap * (self.server.sentences - 1))
        message: dict[str, Any] = {"role": "assistant", "content": text or None}
        if calls:
            message["tool_calls"] = calls
        self.send_json(200, {"id": "chatcmpl-" + uuid.uuid4().hex[:24], "object": "chat.completion",
                             "created": int(time.time()), "model": body["model"],
                             "choices": [{"index": 0, "message": message, "logprobs": None,
                                          "finish_reason": "tool_calls" if calls else "stop"}],
                             "usage": self._usage(body, text)})

    def _answer(self, body: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
        """The reply's words and tool calls, by the fake Messages API's rules."""
        shaped = as_messages_api(body)
        choice = body.get("tool_choice")
        if isinstance(choice, dict):  # a forced tool (a post-call analysis): filled from its schema
            name = choice["function"]["name"]
            schema = next(t["function"].get("parameters") or {} for t in body["tools"] if t["function"]["name"] == name)
            answer = schema_example(schema)
            if isinstance(answer, dict) and "summary" in answer:
                # What the caller's lines were (a transcript's "Caller: ..." lines), as a summary would tell it.
                said = " ".join(line for m in shaped["messages"] if isinstance(m["content"], str)
                                for line in m["content"].splitlines() if line.startswith("Caller:"))
                answer["summary"] = "Summary: " + echo_reply([{"role": "user", "content": said}])
            return "", [_call(name, answer)]
        text = echo_reply(shaped["messages"])
        answered = tool_answers(shaped["messages"]) if shaped["messages"] else ""
        if answered:
            text = f"{text} {answered}"
        text = " ".join([text, *(FURTHER_SENTENCES[i % len(FURTHER_SENTENCES)]
                                 for i in range(self.server.sentences - 1))])
        tool = tool_to_use(shaped) if shaped["messages"] else None
        if tool is None:
            return text, []
        words = shaped["messages"][-1]["content"] if isinstance(shaped["messages"][-1]["content"], str) else ""
        if tool not in ("end_call", "transfer_call"):
            text = "Let me check."  # what a model says before it looks something up
        return text, [_call(tool, {"reason": "the caller asked", "query": words})]

    def _usage(self, body: dict[str, Any], text: str) -> dict[str, Any]:
        prompt = sum(len(str(m.get("content") or "").split()) for m in body["messages"])
        written = len(text.split())
        return {"prompt_tokens": prompt, "completion_tokens": written, "total_tokens": prompt + written,
                "prompt_tokens_details": {"cached_tokens": 0}}

    def _stream(self, body: dict[str, Any], text: str, calls: list[dict[str, Any]]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        base = {"id": "chatcmpl-" + uuid.uuid4().hex[:24], "object": "chat.completion.chunk",
                "created": int(time.time()), "model": body["model"]}

        def chunk(delta: dict[str, Any], finish: str | None = None) -> None:
            self._data({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

        chunk({"role": "assistant", "content": ""})
        pacer = Pacer(self.server.sentence_gap, self.server.break_after, self.wfile.flush, self.server.pause)
        for piece in pacer.words(text):
            chunk({"content": piece})
        if pacer.broken:
            self.close_connection = True  # an upstream that dies mid-reply
            return
        for index, call in enumerate(calls):
            chunk({"tool_calls": [{"index": index, "id": call["id"], "type": "function",
                                   "function": {"name": call["function"]["name"], "arguments": ""}}]})
            chunk({"tool_calls": [{"index": index, "function": {"arguments": call["function"]["arguments"]}}]})
        chunk({}, "tool_calls" if calls else "stop")
        if (body.get("stream_options") or {}).get("include_usage"):
            self._data({**base, "choices": [], "usage": self._usage(body, text)})
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True

    def _data(self, payload: dict[str, Any]) -> None:
        self.wfile.write(f"data: {json.dumps(payload)}\n\n".encode())


def _call(name: str, arguments: Any) -> dict[str, Any]:
    return {"id": "call_" + uuid.uuid4().hex[:24], "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments)}}


def serve(host: str, port: int, *, api_key: str, model: str) -> None:
    """Run in the foreground until interrupted (``voicebot fake-openai``)."""
    server = FakeChatCompletions(host, port, api_key=api_key, models=(model,))
    server.run_in_foreground(f"fake Chat Completions API on {server.url} (key {api_key!r}, model {model!r}): "
                             f"LLM_PROVIDER=openai OPENAI_BASE_URL={server.url} OPENAI_API_KEY={api_key} "
                             f"LLM_MODEL={model}")

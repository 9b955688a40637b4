"""Replies from any model behind OpenAI's Chat Completions: OpenAI, Azure's, Groq, Together, vLLM, Ollama.

The conversation core keeps its history in one shape (the Messages API's
content blocks: text, tool_use, tool_result); this adapter translates it,
each call, into Chat Completions' (an assistant message's ``tool_calls``,
each answered by a ``tool`` message right after it, as the API requires),
and the answer back. Its requests go through ``voicebot.egress`` as the
Anthropic adapter's do (kept-alive connections, every read held to the
turn's deadline, the answer to its cap) and it reads the stream with the
same reader (``voicebot.llm.streaming``). Prompt caching has no switch here: OpenAI
caches a long prefix by itself, and the system prompt and history go first,
unchanged from turn to turn, so the prefix stays stable.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence
from urllib.parse import urlsplit

from .. import compact_json
from ..deadline import time_left, within
from ..egress import HTTP, Response, Stream
from ..exceptions import LLMTimeout, LLMUnavailable
from ..tools import Tool
from .base import LLM, Message, OnText, Reply, ToolUse
from .streaming import (MAX_ANSWER_BYTES, MAX_ERROR_BYTES, NOT_SERVED, NotSaid, Sentences, error_body, events,
                        request_errors, status_error)

COMPLETIONS = "/chat/completions"
OPENAI_URL = "https://api.openai.com/v1"
# A status that says the request was not served (rate limited, overloaded: NOT_SERVED) is asked again once,
# when the server's Retry-After (or a short pause) still fits in the turn's deadline with a second to spare.
LONGEST_RETRY_WAIT = 2.0


class OpenAIChatLLM(LLM):
    """A model as an OpenAI-compatible Chat Completions server serves it: a reply (streamed where asked)
    within a deadline, its errors mapped to voicebot's, its tool calls as voicebot's ``ToolUse``."""

    name = "openai"

    def __init__(self, *, api_key: str, model: str, max_tokens: int, base_url: str = OPENAI_URL,
                 pool_size: int = 64) -> None:
        self.model = model
        self.max_tokens = max_tokens
        # OpenAI's own API takes max_completion_tokens (its newer models refuse max_tokens); compatible
        # servers (vLLM, Ollama, Groq, llama.cpp) take max_tokens.
        self._limit_field = ("max_completion_tokens" if urlsplit(base_url).hostname == "api.openai.com"
                             else "max_tokens")
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        if api_key:  # a local server (Ollama, vLLM) may take none
            headers["Authorization"] = f"Bearer {api_key}"
        self._url = base_url.rstrip("/") + COMPLETIONS
        self._http = HTTP(headers=headers, pool_size=pool_size)

    def reply(self, system: str, messages: Sequence[Message], timeout: float,
              tools: Sequence[Tool] = (), allow_tools: bool = True, *, force_tool: str | None = None) -> Reply:
        if timeout <= 0.01:
            raise LLMTimeout(f"{self.model}: no time left for the model in this turn")
        body = self._body(system, messages, tools, allow_tools, force_tool)
        with within(timeout):
            return self._mapped(lambda: self._call(body), timeout)

    def stream_reply(self, system: str, messages: Sequence[Message], timeout: float, on_text: OnText,
                     tools: Sequence[Tool] = (), allow_tools: bool = True, *, as_written: bool = False) -> Reply:
        if timeout <= 0.01:
            raise LLMTimeout(f"{self.model}: no time left for the model in this turn")
        body = self._body(system, messages, tools, allow_tools)
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
        try:
            with within(timeout):
                return self._mapped(lambda: self._read_stream(body, on_text, as_written), timeout)
        except NotSaid as failed:
            raise failed.error from None  # the platform's own error, for the turn to answer as it does

    def _body(self, system: str, messages: Sequence[Message], tools: Sequence[Tool], allow_tools: bool,
              force_tool: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, self._limit_field: self.max_tokens,
                                "messages": chat_messages(system, messages)}
        if tools:
            body["tools"] = [{"type": "function", "function": {"name": t.name, "description": t.description,
                                                               "parameters": t.input_schema}} for t in tools]
            if not allow_tools:
                body["tool_choice"] = "none"
            elif force_tool:
                body["tool_choice"] = {"type": "function", "function": {"name": force_tool}}
        return body

    def _mapped(self, call: Callable[[], Reply], timeout: float) -> Reply:
        """The call, with its request's failures and a broken answer mapped to ours."""
        with request_errors(self.model, timeout):
            return call()

    @contextmanager
    def _answer(self, body: dict[str, Any]) -> Iterator[Stream]:
        """The server's 200 answer to ``body``; once more after a status that says it was not served (the
        server says so: nothing was billed), if its wait fits the deadline. Never sent again otherwise."""
        data = compact_json.dumps(body)
        for attempt in (1, 2):
            with self._http.stream("POST", self._url, body=data, limit=MAX_ANSWER_BYTES) as answer:
                if answer.status == 200:
                    yield answer
                    return
                error = error_body(answer)
            if not self._once_more(attempt, answer):
                raise status_error(self.model, answer.status, error)

    def _call(self, body: dict[str, Any]) -> Reply:
        # Read whole in one call into libcurl: a reply not streamed needs no stepping through its reads.
        data = compact_json.dumps(body)
        for attempt in (1, 2):
            answer = self._http.request("POST", self._url, body=data, limit=MAX_ANSWER_BYTES)
            if answer.status == 200:
                return reply_of(json.loads(answer.body), self.model)
            if not self._once_more(attempt, answer):
                raise status_error(self.model, answer.status, answer.body[:MAX_ERROR_BYTES])
        raise AssertionError("unreachable")

    def _once_more(self, attempt: int, answer: Response) -> bool:
        """After a status that says it was not served (nothing was billed), once more if its wait fits."""
        wait = _retry_after(answer.headers.get("retry-after"))
        if attempt == 1 and answer.status in NOT_SERVED and wait + 1.0 < time_left():
            time.sleep(wait)
            return True
        return False

    def _read_stream(self, body: dict[str, Any], on_text: OnText, as_written: bool) -> Reply:
        sentences, finished = Sentences(on_text, as_written), False
        calls: dict[int, dict[str, str]] = {}
        usage: dict[str, Any] = {}
        with self._answer(body) as answer:
            if answer.encoded:
                raise LLMUnavailable(f"{self.model}: the stream came {answer.encoded}-encoded, unasked")
            for read in events(answer.pieces()):
                for chunk in read:
                    if chunk == "[DONE]":
                        finished = True
                        continue
                    if not isinstance(chunk, dict):
                        continue
                    if chunk.get("error"):
                        raise LLMUnavailable(f"{self.model}: an error while streaming")
                    if isinstance(chunk.get("usage"), dict):
                        usage = chunk["usage"]
                    for choice in chunk.get("choices") or ():
                        delta = choice.get("delta") or {}
                        if isinstance(delta.get("content"), str):
                            sentences.add(delta["content"])
                        for piece in delta.get("tool_calls") or ():
                            call = calls.setdefault(int(piece.get("index", 0)), {"id": "", "name": "", "arguments": ""})
                            function = piece.get("function") or {}
                            call["id"] = piece.get("id") or call["id"]
                            call["name"] = function.get("name") or call["name"]
                            call["arguments"] += function.get("arguments") or ""
                if not sentences.hand_on():
                    return Reply(sentences.text)  # the caller talked: let go of the model
        if not finished:
            raise LLMUnavailable(f"{self.model}: the stream ended before the reply did")
        sentences.finish()
        uses = [use for use in (_tool_use(c["id"], c["name"], c["arguments"]) for c in calls.values()) if use]
        return Reply(sentences.text, uses, _usage(usage))

    def close(self) -> None:
        self._http.close()


def chat_messages(system: str, messages: Sequence[Message]) -> list[dict[str, Any]]:
    """The history as Chat Completions takes it: the system prompt first; an assistant message's tool uses
    as its ``tool_calls``, each answered by a ``tool`` message right after it (the results voicebot keeps in
    the next user message come first, then that message's own words)."""
    chat: list[dict[str, Any]] = [{"role": "system", "content": system}]
    for message in messages:
        content = message["content"]
        if isinstance(content, str):
            chat.append({"role": message["role"], "content": content})
            continue
        blocks = [b for b in content if isinstance(b, dict)]
        text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
        if message["role"] == "assistant":
            calls = [{"id": b["id"], "type": "function",
                      "function": {"name": b["name"], "arguments": json.dumps(b.get("input") or {})}}
                     for b in blocks if b.get("type") == "tool_use"]
            said: dict[str, Any] = {"role": "assistant", "content": text or None}
            if calls:
                said["tool_calls"] = calls
            chat.append(said)
            continue
        for block in blocks:
            if block.get("type") == "tool_result":
                chat.append({"role": "tool", "tool_call_id": block.get("tool_use_id", ""),
                             "content": _result_text(block.get("content"))})
        if text:
            chat.append({"role": "user", "content": text})
    return chat


def reply_of(answer: Any, model: str) -> Reply:
    """A chat completion, read as plain JSON: its words, its tool calls and what it billed."""
    choices = answer.get("choices") if isinstance(answer, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise LLMUnavailable(f"{model}: the answer has no choice")
    message = choices[0].get("message") or {}
    content = message.get("content")
    text = content if isinstance(content, str) else ""
    uses = [use for use in (_tool_use(c.get("id", ""), (c.get("function") or {}).get("name", ""),
                                      (c.get("function") or {}).get("arguments", ""))
                            for c in message.get("tool_calls") or () if isinstance(c, dict)) if use]
    return Reply(text, uses, _usage(answer.get("usage")))


def _tool_use(call_id: Any, name: Any, arguments: Any) -> ToolUse | None:
    if not isinstance(call_id, str) or not call_id or not isinstance(name, str) or not name:
        return None
    try:
        given = json.loads(arguments) if isinstance(arguments, str) and arguments.strip() else {}
    except ValueError:
        given = {}
    return ToolUse(call_id, name, given if isinstance(given, dict) else {})


def _result_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content if isinstance(b, dict))
    return ""


def _usage(raw: object) -> dict[str, int]:
    if not isinstance(raw, dict):
        return {}
    cached = int(((raw.get("prompt_tokens_details") or {}).get("cached_tokens")) or 0)
    prompt = int(raw.get("prompt_tokens") or 0)
    # OpenAI counts cached tokens inside prompt_tokens; voicebot's "input" is what was billed at full price.
    return {"input": max(0, prompt - cached), "cache_write": 0, "cache_read": cached,
            "output": int(raw.get("completion_tokens") or 0)}


def _retry_after(value: str | None) -> float:
    try:
        return min(LONGEST_RETRY_WAIT, max(0.0, float(value))) if value else 0.25
    except ValueError:
        return 0.25

"""Replies from Claude: the Messages API on voicebot's egress layer, with the official SDK's headers."""

from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import anthropic

from .. import compact_json
from ..deadline import within
from ..egress import HTTP, Stream
from ..exceptions import LLMError, LLMTimeout, LLMUnavailable
from ..tools import Tool
from .base import LLM, Message, OnText, Reply, ToolUse
from .streaming import (MAX_ANSWER_BYTES, MAX_ERROR_BYTES, NotSaid, Sentences, error_body, events, request_errors,
                        status_error)

MESSAGES = "/v1/messages"


class AnthropicLLM(LLM):
    """The model as Anthropic's Messages API serves it: a reply (streamed where asked) within a deadline,
    its errors mapped to voicebot's (``LLMTimeout``, ``LLMUnavailable``, ``LLMRejected``, ``LLMKeyRejected``).

    The SDK's client gives the headers (key, API version) and the base URL
    (``ANTHROPIC_BASE_URL`` included); the request itself goes through
    ``voicebot.egress``, in the turn's own thread, every read held to the
    turn's deadline, the answer to its cap. Retrying inside a phone turn is
    left to the next turn: the caller hears the fallback line now rather than
    silence while we back off.
    """

    name = "anthropic"

    def __init__(self, *, api_key: str, model: str, max_tokens: int, base_url: str | None = None,
                 prompt_caching: bool = True, pool_size: int = 64) -> None:
        self.model = model
        self.max_tokens = max_tokens
        self.prompt_caching = prompt_caching
        sdk = anthropic.Anthropic(api_key=api_key, base_url=base_url or None, max_retries=0)
        self._url = str(sdk.base_url).rstrip("/") + MESSAGES
        # The key, the API version, the SDK's User-Agent. Not its X-Stainless-* telemetry: it describes the
        # SDK's own transport, which does not send these requests, and each header costs CPU on every turn.
        headers = {name: value for name, value in sdk.default_headers.items()
                   if isinstance(value, str) and not name.lower().startswith("x-stainless-")}
        sdk.close()
        self._http = HTTP(headers=headers, pool_size=pool_size)

    def reply(self, system: str, messages: Sequence[Message], timeout: float,
              tools: Sequence[Tool] = (), allow_tools: bool = True, *, force_tool: str | None = None) -> Reply:
        """Within ``timeout`` seconds of wall time, however the model trickles its answer."""
        if timeout <= 0.01:
            raise LLMTimeout(f"{self.model}: no time left for the model in this turn")
        body = self._body(system, list(messages), [tool.spec() for tool in tools], allow_tools, force_tool)
        with within(timeout):
            return self._mapped(lambda: self._call(body), timeout)

    def stream_reply(self, system: str, messages: Sequence[Message], timeout: float, on_text: OnText,
                     tools: Sequence[Tool] = (), allow_tools: bool = True, *, as_written: bool = False) -> Reply:
        """The Messages API's streaming, read in the turn's own thread.

        Each sentence goes to ``on_text`` as soon as the model has finished
        it (sentences finished by one read of the stream, together). While a
        piece is being said, the model's next words wait in the socket, and
        no thread hands anything to another. The stream is read one chunk at
        a time, so sentences that queued during a say are said one by one,
        not merged. The deadline holds every read, as in ``reply``.
        """
        if timeout <= 0.01:
            raise LLMTimeout(f"{self.model}: no time left for the model in this turn")
        body = self._body(system, list(messages), [tool.spec() for tool in tools], allow_tools)
        body["stream"] = True
        try:
            with within(timeout):
                return self._mapped(lambda: self._read_stream(body, on_text, as_written), timeout)
        except NotSaid as failed:
            raise failed.error from None  # the platform's own error, for the turn to answer as it does

    def _body(self, system: str, messages: list[Message], tools: list[dict[str, Any]],
              allow_tools: bool, force_tool: str | None = None) -> dict[str, Any]:
        # Plain JSON-able dicts: the SDK's TypedDicts add nothing to what the strict fake checks.
        sent_system: Any = system
        sent_messages: Any = messages
        if self.prompt_caching:
            sent_system, sent_messages = _with_cache_breakpoints(system, messages)
        body: dict[str, Any] = {"model": self.model, "max_tokens": self.max_tokens, "system": sent_system,
                                "messages": sent_messages}
        if tools:
            body["tools"] = tools
            if not allow_tools:
                body["tool_choice"] = {"type": "none"}
            elif force_tool:
                body["tool_choice"] = {"type": "tool", "name": force_tool}
        return body

    def _mapped(self, call: Callable[[], Reply], timeout: float) -> Reply:
        """The call, with its request's failures mapped to ours."""
        try:
            with request_errors(self.model, timeout):
                return call()
        except (LLMError, NotSaid):
            raise

    @contextmanager
    def _answer(self, body: dict[str, Any]) -> Iterator[Stream]:
        """The API's 200 answer to ``body``; any other status raises voicebot's error for it. Never sent twice:
        a POST that may have reached the API may have been billed."""
        with self._http.stream("POST", self._url, body=compact_json.dumps(body),
                               limit=MAX_ANSWER_BYTES) as answer:
            if answer.status != 200:
                raise status_error(self.model, answer.status, error_body(answer))
            yield answer

    def _call(self, body: dict[str, Any]) -> Reply:
        # Read whole in one call into libcurl: a reply not streamed needs no stepping through its reads.
        answer = self._http.request("POST", self._url, body=compact_json.dumps(body), limit=MAX_ANSWER_BYTES)
        if answer.status != 200:
            raise status_error(self.model, answer.status, answer.body[:MAX_ERROR_BYTES])
        return _reply_of(json.loads(answer.body), self.model)

    def _read_stream(self, body: dict[str, Any], on_text: OnText, as_written: bool) -> Reply:
        """Server-sent events as plain JSON (the SDK's typed events cost CPU per token)."""
        sentences, finished = Sentences(on_text, as_written), False
        blocks: dict[int, dict[str, Any]] = {}
        usage: dict[str, Any] = {}
        with self._answer(body) as answer:
            if answer.encoded:
                raise LLMUnavailable(f"{self.model}: the stream came {answer.encoded}-encoded, unasked")
            for read in events(answer.pieces()):
                for event in read:
                    kind = event.get("type") if isinstance(event, dict) else None
                    if kind == "content_block_delta":
                        delta = event.get("delta") or {}
                        if delta.get("type") == "text_delta":
                            sentences.add(delta.get("text", ""))
                        elif delta.get("type") == "input_json_delta":
                            block = blocks.setdefault(event.get("index", -1), {})
                            block["json"] = block.get("json", "") + delta.get("partial_json", "")
                    elif kind == "content_block_start":
                        block = event.get("content_block") or {}
                        if block.get("type") == "tool_use":
                            blocks[event.get("index", -1)] = {"id": block.get("id"), "name": block.get("name"),
                                                              "json": ""}
                    elif kind == "message_start":
                        usage.update((event.get("message") or {}).get("usage") or {})
                    elif kind == "message_delta":
                        usage.update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
                    elif kind == "message_stop":
                        finished = True
                    elif kind == "error":
                        raise LLMUnavailable(f"{self.model}: {(event.get('error') or {}).get('type', 'error')} "
                                             "while streaming")
                if not sentences.hand_on():
                    return Reply(sentences.text)  # the caller talked: let go of the model
        if not finished:
            raise LLMUnavailable(f"{self.model}: the stream ended before the reply did")
        sentences.finish()
        uses = []
        for block in blocks.values():
            try:
                arguments = json.loads(block["json"]) if block.get("json") else {}
            except ValueError:
                arguments = {}
            if isinstance(block.get("id"), str) and isinstance(block.get("name"), str):
                uses.append(ToolUse(block["id"], block["name"], arguments if isinstance(arguments, dict) else {}))
        return Reply(sentences.text, uses, _usage(usage))

    def close(self) -> None:
        self._http.close()


def _reply_of(message: Any, model: str) -> Reply:
    """A Messages API answer, read as plain JSON: its words, its tool uses and what it billed."""
    blocks = message.get("content") if isinstance(message, dict) else None
    if not isinstance(blocks, list):
        raise LLMUnavailable(f"{model}: the answer has no content")
    blocks = [b for b in blocks if isinstance(b, dict)]
    text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
    uses = [ToolUse(b["id"], b["name"], b.get("input") if isinstance(b.get("input"), dict) else {})
            for b in blocks if b.get("type") == "tool_use" and isinstance(b.get("id"), str)
            and isinstance(b.get("name"), str)]
    return Reply(text, uses, _usage(message.get("usage")))


_EPHEMERAL: dict[str, Any] = {"type": "ephemeral"}


def _with_cache_breakpoints(system: str, messages: list[Message]) -> tuple[list[dict[str, Any]], list[Any]]:
    """Two cache breakpoints, as the Messages API documents: after the system prompt (which caches the
    tools before it too) and after the newest message, so each turn of a call re-bills only what is
    new. The call's stored history is left as it is."""
    cached_system: list[dict[str, Any]] = [{"type": "text", "text": system, "cache_control": _EPHEMERAL}]
    if not messages:
        return cached_system, []
    last = messages[-1]
    content = last["content"]
    blocks: list[dict[str, Any]] = ([{"type": "text", "text": content}] if isinstance(content, str)
                                    else [dict(b) for b in content])
    blocks[-1] = {**blocks[-1], "cache_control": _EPHEMERAL}
    # The earlier messages go as they are (nothing changes them): copying a 20-turn history cost every turn.
    return cached_system, [*messages[:-1], {"role": last["role"], "content": blocks}]


def _usage(raw: object) -> dict[str, int]:
    if not isinstance(raw, dict):
        return {}
    names = {"input": "input_tokens", "cache_write": "cache_creation_input_tokens",
             "cache_read": "cache_read_input_tokens", "output": "output_tokens"}
    return {ours: int(raw.get(theirs) or 0) for ours, theirs in names.items()}

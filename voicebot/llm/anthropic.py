"""Replies from Claude through the official anthropic SDK, within a wall-clock deadline."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Sequence

import anthropic

from ..exceptions import LLMError, LLMKeyRejected, LLMRejected, LLMTimeout, LLMUnavailable
from ..tools import Tool
from .base import LLM, Message, Reply, ToolUse

# The SDK's errors, most specific first, and what each means to a turn.
# Retrying inside a phone turn is left to the next turn: the caller hears the
# fallback line now rather than silence while we back off.
_ERRORS: tuple[tuple[type[Exception], type[LLMError]], ...] = (
    (anthropic.APITimeoutError, LLMTimeout),
    (anthropic.APIConnectionError, LLMUnavailable),
    (anthropic.AuthenticationError, LLMKeyRejected),
    (anthropic.PermissionDeniedError, LLMKeyRejected),
    (anthropic.RateLimitError, LLMUnavailable),
    (anthropic.InternalServerError, LLMUnavailable),  # 5xx, 529 overloaded
    (anthropic.APIStatusError, LLMRejected),
    (anthropic.AnthropicError, LLMUnavailable),
)


class AnthropicLLM(LLM):
    name = "anthropic"

    def __init__(self, *, api_key: str, model: str, max_tokens: int, base_url: str | None = None,
                 client: anthropic.Anthropic | None = None, max_concurrency: int = 64,
                 prompt_caching: bool = True) -> None:
        self.model = model
        self.max_tokens = max_tokens
        self.prompt_caching = prompt_caching
        self._client = client or anthropic.Anthropic(
            api_key=api_key,
            base_url=base_url or None,
            max_retries=0,
        )
        # The raw response, read as plain JSON: building the SDK's typed
        # Message costs about a fifth of the SDK's CPU per call, and a turn
        # needs only the text blocks.
        self._create = self._client.messages.with_raw_response.create
        self._max_concurrency = max_concurrency
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def _executor(self) -> ThreadPoolExecutor:
        # Made on first use, in the worker process (a pool's threads do not survive a fork).
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._max_concurrency, thread_name_prefix="llm")
            return self._pool

    def reply(self, system: str, messages: Sequence[Message], timeout: float,
              tools: Sequence[Tool] = (), allow_tools: bool = True) -> Reply:
        """The SDK's timeout bounds each read, not the call: a model that trickles its
        answer, or a slow DNS lookup, would hold the turn far past it. The call
        runs on a pool thread and the turn waits for it ``timeout`` seconds of
        wall time at most; a call left behind ends by itself on the SDK's timeout.
        """
        if timeout <= 0.01:
            raise LLMTimeout(f"{self.model}: no time left for the model in this turn")
        future = self._executor().submit(self._call, system, list(messages), timeout,
                                         [tool.spec() for tool in tools], allow_tools)
        try:
            return future.result(timeout)
        except FutureTimeout:
            future.cancel()
            raise LLMTimeout(f"{self.model}: no reply within {timeout:.1f}s") from None

    def _call(self, system: str, messages: list[Message], timeout: float, tools: list[dict],
              allow_tools: bool) -> Reply:
        # As raw JSON (extra_body), not typed params: the SDK walks typed params
        # through its transform on every call, and tool schemas are deep (~0.1 ms a turn).
        extra: dict = {"tools": tools} if tools else {}
        if tools and not allow_tools:
            extra["tool_choice"] = {"type": "none"}
        # Plain JSON-able dicts: the SDK's TypedDicts add nothing to what the strict fake checks.
        sent_system: Any = system
        sent_messages: Any = messages
        if self.prompt_caching:
            sent_system, sent_messages = _with_cache_breakpoints(system, messages)
        try:
            response = self._create(model=self.model, max_tokens=self.max_tokens, system=sent_system,
                                    messages=sent_messages, timeout=timeout, extra_body=extra or None)
            message = json.loads(response.http_response.content)
        except ValueError as exc:
            raise LLMUnavailable(f"{self.model}: the answer is not JSON") from exc
        except Exception as exc:
            for vendor_error, ours in _ERRORS:
                if isinstance(exc, vendor_error):
                    status = getattr(exc, "status_code", None)
                    detail = f"HTTP {status}" if status else type(exc).__name__
                    raise ours(f"{self.model}: {detail}") from exc
            raise
        blocks = message.get("content") if isinstance(message, dict) else None
        if not isinstance(blocks, list):
            raise LLMUnavailable(f"{self.model}: the answer has no content")
        blocks = [b for b in blocks if isinstance(b, dict)]
        text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
        uses = [ToolUse(b["id"], b["name"], b.get("input") if isinstance(b.get("input"), dict) else {})
                for b in blocks if b.get("type") == "tool_use" and isinstance(b.get("id"), str)
                and isinstance(b.get("name"), str)]
        return Reply(text, uses, _usage(message.get("usage")))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()


_EPHEMERAL: dict[str, Any] = {"type": "ephemeral"}


def _with_cache_breakpoints(system: str, messages: list[Message]) -> tuple[list[dict], list[dict]]:
    """Two cache breakpoints, as the Messages API documents: after the system prompt (which caches the
    tools before it too) and after the newest message, so each turn of a call re-bills only what is
    new. The call's stored history is left as it is."""
    cached_system: list[dict] = [{"type": "text", "text": system, "cache_control": _EPHEMERAL}]
    if not messages:
        return cached_system, []
    last = messages[-1]
    content = last["content"]
    blocks: list[dict[str, Any]] = ([{"type": "text", "text": content}] if isinstance(content, str)
                                    else [dict(b) for b in content])
    blocks[-1] = {**blocks[-1], "cache_control": _EPHEMERAL}
    return cached_system, [*(dict(m) for m in messages[:-1]), {"role": last["role"], "content": blocks}]


def _usage(raw: object) -> dict[str, int]:
    if not isinstance(raw, dict):
        return {}
    names = {"input": "input_tokens", "cache_write": "cache_creation_input_tokens",
             "cache_read": "cache_read_input_tokens", "output": "output_tokens"}
    return {ours: int(raw.get(theirs) or 0) for ours, theirs in names.items()}

"""Chat Completions' answer shapes: a streamed reply as server-sent events, a whole one as one object, and
errors as OpenAI's clients read them.

Every OpenAI client (the ``openai`` SDK, Pipecat's and LiveKit's services, Vapi, ElevenLabs) reads the
same shapes, so they are built once, here: ``chat.completion.chunk`` events (``data: {...}`` lines, the last
``data: [DONE]``), a ``chat.completion`` for a request without ``stream``, and ``{"error": {...}}``.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

DONE = b"data: [DONE]\n\n"


def tool_call(index: int, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """One call of a platform's tool, as a delta or a message carries it (the arguments as a JSON string)."""
    return {"index": index, "id": f"call_{secrets.token_hex(12)}", "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments)}}


def usage_of(tokens: dict[str, int]) -> dict[str, int]:
    """A turn's tokens (voicebot's kinds: input, cache_write, cache_read, output) as OpenAI counts them."""
    prompt = tokens.get("input", 0) + tokens.get("cache_write", 0) + tokens.get("cache_read", 0)
    completion = tokens.get("output", 0)
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    if tokens.get("cache_read"):
        usage["prompt_tokens_details"] = {"cached_tokens": tokens["cache_read"]}  # type: ignore[assignment]
    return usage


class Completion:
    """One answer, streamed or whole: its id, model and time, shared by all its chunks."""

    def __init__(self, model: str) -> None:
        self.id = f"chatcmpl-{secrets.token_hex(12)}"
        self.model = model
        self.created = int(time.time())

    def _base(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        """A ``chat.completion.chunk`` event with one choice."""
        event = {**self._base("chat.completion.chunk"),
                 "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        return b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"

    def usage_chunk(self, tokens: dict[str, int]) -> bytes:
        """The last event before [DONE] when ``stream_options.include_usage`` asked for it: no choices."""
        event = {**self._base("chat.completion.chunk"), "choices": [], "usage": usage_of(tokens)}
        return b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"

    def whole(self, text: str, calls: list[dict[str, Any]], tokens: dict[str, int]) -> dict[str, Any]:
        """A ``chat.completion``: the reply's words and the platform's tool calls, for a request not streamed."""
        message: dict[str, Any] = {"role": "assistant", "content": text or None}
        if calls:
            message["tool_calls"] = [{k: v for k, v in c.items() if k != "index"} for c in calls]
        return {**self._base("chat.completion"),
                "choices": [{"index": 0, "message": message, "logprobs": None,
                             "finish_reason": "tool_calls" if calls else "stop"}],
                "usage": usage_of(tokens)}


def error_body(kind: str, message: str, code: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}

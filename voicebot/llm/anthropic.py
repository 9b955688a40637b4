"""Replies from Claude through the official anthropic SDK."""

from __future__ import annotations

import json
from typing import Sequence

import anthropic

from ..exceptions import LLMError, LLMRejected, LLMTimeout, LLMUnavailable
from .base import LLM, Message

# The SDK's errors, most specific first, and what each means to a turn.
# Retrying inside a phone turn is left to the next turn: the caller hears the
# fallback line now rather than silence while we back off.
_ERRORS: tuple[tuple[type[Exception], type[LLMError]], ...] = (
    (anthropic.APITimeoutError, LLMTimeout),
    (anthropic.APIConnectionError, LLMUnavailable),
    (anthropic.RateLimitError, LLMUnavailable),
    (anthropic.InternalServerError, LLMUnavailable),  # 5xx, 529 overloaded
    (anthropic.APIStatusError, LLMRejected),
    (anthropic.AnthropicError, LLMUnavailable),
)


class AnthropicLLM(LLM):
    name = "anthropic"

    def __init__(self, *, api_key: str, model: str, max_tokens: int,
                 base_url: str | None = None, client: anthropic.Anthropic | None = None) -> None:
        self.model = model
        self.max_tokens = max_tokens
        self._client = client or anthropic.Anthropic(
            api_key=api_key,
            base_url=base_url or None,
            max_retries=0,
        )
        # The raw response, read as plain JSON: building the SDK's typed
        # Message costs about a fifth of the SDK's CPU per call, and a turn
        # needs only the text blocks.
        self._create = self._client.messages.with_raw_response.create

    def reply(self, system: str, messages: Sequence[Message], timeout: float) -> str:
        try:
            response = self._create(
                model=self.model,
                max_tokens=self.max_tokens,
                system=system,
                messages=list(messages),
                timeout=timeout,
            )
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
        return "".join(b.get("text", "") for b in blocks if isinstance(b, dict) and b.get("type") == "text")

    def close(self) -> None:
        self._client.close()

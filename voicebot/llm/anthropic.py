"""Replies from Claude through the official anthropic SDK."""

from __future__ import annotations

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

    def reply(self, system: str, messages: Sequence[Message], timeout: float) -> str:
        try:
            message = self._client.messages.create(
                model=self.model,
                max_tokens=self.max_tokens,
                system=system,
                messages=list(messages),
                timeout=timeout,
            )
        except Exception as exc:
            for vendor_error, ours in _ERRORS:
                if isinstance(exc, vendor_error):
                    status = getattr(exc, "status_code", None)
                    detail = f"HTTP {status}" if status else type(exc).__name__
                    raise ours(f"{self.model}: {detail}") from exc
            raise
        return "".join(block.text for block in message.content if block.type == "text")

    def close(self) -> None:
        self._client.close()

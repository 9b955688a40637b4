"""LLM adapters, chosen by configuration: Claude with a key (the offline responder without), or any model
behind an OpenAI-compatible Chat Completions server (LLM_PROVIDER=openai)."""

from __future__ import annotations

from typing import Any, Mapping

from .base import LLM, Message, Reply, ToolUse, text_of
from .offline import OfflineResponder

__all__ = ["LLM", "Message", "OfflineResponder", "Reply", "ToolUse", "build_llm", "text_of"]


def build_llm(config: Mapping[str, Any]) -> LLM:
    if config["LLM_PROVIDER"] == "openai":
        from .openai import OpenAIChatLLM

        return OpenAIChatLLM(api_key=config["OPENAI_API_KEY"], model=config["LLM_MODEL"],
                             max_tokens=config["LLM_MAX_TOKENS"], base_url=config["OPENAI_BASE_URL"],
                             pool_size=config["WEB_THREADS"])
    if not config["ANTHROPIC_API_KEY"]:
        return OfflineResponder()
    from .anthropic import AnthropicLLM

    return AnthropicLLM(
        api_key=config["ANTHROPIC_API_KEY"],
        model=config["LLM_MODEL"],
        max_tokens=config["LLM_MAX_TOKENS"],
        base_url=config["ANTHROPIC_BASE_URL"] or None,
        # Connections kept: as many as turns in flight in one worker.
        pool_size=config["WEB_THREADS"],
        prompt_caching=config["PROMPT_CACHING"],
    )

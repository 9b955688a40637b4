"""A responder that needs no network and no key, so a fresh checkout answers calls."""

from __future__ import annotations

from typing import Sequence

from .base import LLM, Message


class OfflineResponder(LLM):
    name = "offline"

    def reply(self, system: str, messages: Sequence[Message], timeout: float) -> str:
        heard = messages[-1]["content"].strip()
        return (
            f"You said: {heard.rstrip('.!?')}. I am running in offline mode, so no AI model is "
            "connected yet; set the Anthropic API key to give me one."
        )

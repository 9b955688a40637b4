"""The LLM adapter interface: one synchronous call per turn."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Sequence, TypedDict


class Message(TypedDict):
    role: str  # "user" or "assistant", alternating, first "user"
    content: str


class LLM(ABC):
    name = "llm"

    @abstractmethod
    def reply(self, system: str, messages: Sequence[Message], timeout: float) -> str:
        """The model's next line in the conversation.

        Raises LLMTimeout, LLMUnavailable or LLMRejected; never a vendor's error.
        """

    def close(self) -> None:
        """Let go of connections."""

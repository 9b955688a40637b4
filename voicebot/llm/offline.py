"""A responder that needs no network and no key, so a fresh checkout answers calls."""

from __future__ import annotations

import re
import uuid
from typing import Sequence

from ..tools import END_CALL, TRANSFER_CALL, Tool
from .base import LLM, Message, Reply, ToolUse, text_of

# What makes it use the call tools, so hang-up and hand-off can be tried without a key.
_GOODBYE = re.compile(r"\b(good ?bye|bye|hang up)\b", re.I)
_PERSON = re.compile(r"\b(human|person|agent|operator|representative|someone real)\b", re.I)


class OfflineResponder(LLM):
    name = "offline"

    def reply(self, system: str, messages: Sequence[Message], timeout: float,
              tools: Sequence[Tool] = (), allow_tools: bool = True) -> Reply:
        heard = text_of(messages[-1]).strip()
        offered = {tool.name for tool in tools} if allow_tools else set()
        if TRANSFER_CALL in offered and _PERSON.search(heard):
            return Reply("Of course, let me connect you with a person.", [_use(TRANSFER_CALL, "asked for a person")])
        if END_CALL in offered and _GOODBYE.search(heard):
            return Reply("Thanks for calling. Goodbye!", [_use(END_CALL, "the caller said goodbye")])
        return Reply(
            f"You said: {heard.rstrip('.!?')}. I am running in offline mode, so no AI model is "
            "connected yet; set the Anthropic API key to give me one."
        )


def _use(name: str, reason: str) -> ToolUse:
    return ToolUse("toolu_offline_" + uuid.uuid4().hex[:16], name, {"reason": reason})

"""Tools the model may use, and the actions on a call they lead to.

A tool is offered to the model through the Messages API's tool use. The
call-lifecycle tools end the turn with an action for the platform: ``end_call``
(hang up once the goodbye has been heard) and ``transfer_call`` (hand the
caller to a person at ``TRANSFER_NUMBER``, offered only when that is set).
Each ``tool_use`` the model makes is answered with a ``tool_result`` in the
history, as the API requires.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

END_CALL = "end_call"
TRANSFER_CALL = "transfer_call"


@dataclass(frozen=True)
class Tool:
    """A tool offered to the model: its name, what it is for, and the JSON schema of its input."""

    name: str
    description: str
    input_schema: dict[str, Any] = field(default_factory=lambda: {
        "type": "object", "properties": {"reason": {"type": "string", "description": "why, in a few words"}}})

    def spec(self) -> dict[str, Any]:
        """As the Messages API takes it in ``tools``."""
        return {"name": self.name, "description": self.description, "input_schema": self.input_schema}


@dataclass(frozen=True)
class Action:
    """What the platform is to do with the call after this turn's words."""

    type: str  # "hangup" or "transfer"
    to: str = ""  # the transfer's destination
    reason: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"type": self.type, "to": self.to} if self.type == "transfer" else {"type": self.type}


LIFECYCLE_TOOLS = {
    END_CALL: Tool(END_CALL, "End the phone call. Use it when the conversation is over: the caller says goodbye, "
                             "or has what they need and wants nothing more. Say a short goodbye in the same reply."),
    TRANSFER_CALL: Tool(TRANSFER_CALL, "Hand the caller to a human agent. Use it when the caller asks for a person, "
                                       "or needs something you cannot do. Tell the caller, in the same reply, "
                                       "that you are connecting them."),
}

LIFECYCLE_PROMPT = (
    "You can act on the call with tools. When the conversation is over, say goodbye and use end_call. "
    "{transfer}Never use a tool to say something; say it in your reply."
)
TRANSFER_PROMPT = ("When the caller asks for a person, or needs something you cannot do, say you are "
                   "connecting them and use transfer_call. ")


def lifecycle_tools(transfer_number: str) -> list[Tool]:
    return [LIFECYCLE_TOOLS[END_CALL], *([LIFECYCLE_TOOLS[TRANSFER_CALL]] if transfer_number else [])]


def lifecycle_prompt(transfer_number: str) -> str:
    return LIFECYCLE_PROMPT.format(transfer=TRANSFER_PROMPT if transfer_number else "")

"""How each front end that calls a "custom LLM" says what voicebot needs: which call a request belongs to,
who is calling, the call's variables, and the names of its own call-control tools.

Every dialect posts the same Chat Completions body; they differ only in these few places, so each is a
small table here and one view serves them all. The facts come from each platform's own documentation:
Vapi's ``CustomLLMModel`` (``call``, ``customer``, ``phoneNumber``, ``metadata`` with ``metadataSendMode``
"variable"), ElevenLabs' custom LLM (``elevenlabs_extra_body``, ``user_id``; request headers may carry its
dynamic variables, ``{{system__conversation_id}}`` among them), Telnyx's ``forward_metadata``
(``extra_metadata``: the assistant's dynamic variables, ``call_control_id`` and ``telnyx_end_user_target``
among them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import AbstractSet, Any, Callable

from ..placeholders import MAX_VALUE_CHARS, MAX_VARIABLES, NAME
from ..tools import Action

Headers = Any  # werkzeug's Headers, or any mapping of names to values (read with .get)
Find = Callable[[dict[str, Any], Headers], Any]


def _path(body: dict[str, Any], *keys: str) -> Any:
    """``body[k1][k2]...`` where each step is an object; None where one is missing."""
    value: Any = body
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _first(*finds: Find) -> Find:
    """The first of ``finds`` that finds a non-empty value."""
    def find(body: dict[str, Any], headers: Headers) -> Any:
        for each in finds:
            value = each(body, headers)
            if value not in (None, ""):
                return value
        return None
    return find


def _header(name: str) -> Find:
    return lambda body, headers: headers.get(name)


def _field(*keys: str) -> Find:
    return lambda body, headers: _path(body, *keys)


def variables_in(*objects: Any) -> dict[str, str]:
    """The call's variables among what a platform sends of its own (metadata, dynamic variables): text and
    numbers under names a placeholder can use, at most MAX_VARIABLES; anything else it sends is not one."""
    found: dict[str, str] = {}
    for each in objects:
        if not isinstance(each, dict):
            continue
        for name, value in each.items():
            if len(found) >= MAX_VARIABLES:
                return found
            if not isinstance(name, str) or not NAME.match(name):
                continue
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                continue
            text = str(value).strip()
            if len(text) <= MAX_VALUE_CHARS and "{{" not in text and "}}" not in text:
                found[name] = text
    return found


@dataclass(frozen=True)
class Dialect:
    """One front end's way of saying the call: where its id and numbers are, and its call-control tools.

    ``end_tools`` and ``transfer_tools``: the names of the platform's own tools that hang up and hand the
    caller on, in the order voicebot looks for them among what a request offers; ``end_arguments`` and
    ``transfer_arguments`` shape the call to one of them from voicebot's action.
    """

    name: str  # the platform's name: its namespace in the store, its records' "platform"
    prefix: str  # where its endpoint is: {prefix}/chat/completions
    title: str  # as the docs and errors name it
    call_id: Find
    where_call_id: str  # what the 400 says to send
    caller: Find
    called: Find
    variables: Callable[[dict[str, Any]], dict[str, str]]
    end_tools: tuple[str, ...]
    transfer_tools: tuple[str, ...]
    end_arguments: Callable[[Action, str], dict[str, Any]]
    transfer_arguments: Callable[[Action, str], dict[str, Any]]

    def tool_for(self, action: Action, offered: AbstractSet[str]) -> str | None:
        """The platform's tool that takes ``action``, if the request offered one."""
        names = self.end_tools if action.type == "hangup" else self.transfer_tools
        return next((name for name in names if name in offered), None)

    def arguments_for(self, action: Action, line: str) -> dict[str, Any]:
        """What the platform's tool is called with; ``line`` is what the caller heard of the action."""
        return (self.end_arguments if action.type == "hangup" else self.transfer_arguments)(action, line)


GENERIC = Dialect(
    name="completions", prefix="/openai/v1", title="an OpenAI client",
    call_id=_first(_header("X-Call-Id"), _field("metadata", "call_id"), _field("extra_metadata", "call_control_id"),
                   _field("user")),
    where_call_id="name the call: an X-Call-Id header, metadata.call_id, or user",
    caller=_first(_header("X-Caller-Number"), _field("metadata", "caller"),
                  _field("extra_metadata", "telnyx_end_user_target")),
    called=_first(_header("X-Called-Number"), _field("metadata", "called"),
                  _field("extra_metadata", "telnyx_agent_target")),
    variables=lambda body: variables_in(_path(body, "metadata", "variables"), body.get("extra_metadata")),
    end_tools=("end_call",), transfer_tools=("transfer_call",),
    end_arguments=lambda action, line: {"reason": action.reason},
    transfer_arguments=lambda action, line: {"to": action.to, "reason": action.reason},
)

VAPI = Dialect(
    name="vapi", prefix="/vapi", title="Vapi",
    call_id=_field("call", "id"),
    where_call_id="Vapi sends the call as call.id: set the model's metadataSendMode to \"variable\"",
    caller=_first(_field("customer", "number"), _field("call", "customer", "number")),
    called=_first(_field("phoneNumber", "number"), _field("call", "phoneNumber", "number")),
    variables=lambda body: variables_in(body.get("metadata"),
                                        _path(body, "call", "assistantOverrides", "variableValues")),
    end_tools=("endCall", "end_call"), transfer_tools=("transferCall", "transfer_call"),
    end_arguments=lambda action, line: {},
    transfer_arguments=lambda action, line: {"destination": action.to},
)

ELEVENLABS = Dialect(
    name="elevenlabs", prefix="/elevenlabs", title="ElevenLabs",
    call_id=_first(_header("X-Conversation-Id"), _field("elevenlabs_extra_body", "conversation_id"),
                   _field("user_id")),
    where_call_id=("send the conversation: a request header X-Conversation-Id: {{system__conversation_id}}, "
                   "or elevenlabs_extra_body.conversation_id"),
    caller=_first(_header("X-Caller-Number"), _field("elevenlabs_extra_body", "caller")),
    called=_first(_header("X-Called-Number"), _field("elevenlabs_extra_body", "called")),
    variables=lambda body: variables_in(body.get("elevenlabs_extra_body")),
    end_tools=("end_call",), transfer_tools=("transfer_to_number",),
    end_arguments=lambda action, line: {"reason": action.reason or "the conversation is over", "message": ""},
    transfer_arguments=lambda action, line: {"transfer_number": action.to, "client_message": line,
                                             "agent_message": action.reason},
)

DIALECTS: tuple[Dialect, ...] = (GENERIC, VAPI, ELEVENLABS)

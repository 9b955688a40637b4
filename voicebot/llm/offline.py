"""A responder that needs no network and no key, so a fresh checkout answers calls."""

from __future__ import annotations

import re
import uuid
from typing import Any, Sequence

from ..tools import END_CALL, TRANSFER_CALL, Tool
from .base import LLM, Message, Reply, ToolUse, text_of

# What makes it use the call tools, so hang-up and hand-off can be tried without a key.
_GOODBYE = re.compile(r"\b(good ?bye|bye|hang up)\b", re.I)
_PERSON = re.compile(r"\b(human|person|agent|operator|representative|someone real)\b", re.I)


class OfflineResponder(LLM):
    """Replies without a model (no ANTHROPIC_API_KEY): it says it is offline, and acts on goodbyes and
    requests for a person as the model would."""

    name = "offline"

    def reply(self, system: str, messages: Sequence[Message], timeout: float,
              tools: Sequence[Tool] = (), allow_tools: bool = True, *, force_tool: str | None = None) -> Reply:
        heard = text_of(messages[-1]).strip()
        forced = next((tool for tool in tools if tool.name == force_tool), None)
        if forced is not None:
            # An analysis: a plain summary of what the caller said, and the schema's shape for the rest.
            said = re.findall(r"^Caller: (.*)$", heard, re.M)
            answer = schema_example(forced.input_schema)
            if "summary" in answer:
                answer["summary"] = (f"A call of {len(said)} caller turn(s), answered offline (no AI model "
                                     f"was connected). The caller said: {' / '.join(said)[:400] or 'nothing'}.")
            return Reply("", [ToolUse("toolu_offline_" + uuid.uuid4().hex[:16], forced.name, answer)])
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


def schema_example(schema: Any) -> Any:
    """A value that fits ``schema`` (the usual keywords: type, enum, const, properties, items, bounds)."""
    if not isinstance(schema, dict):
        return None
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return schema_example(schema[key][0])
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties") or {}
        return {name: schema_example(sub) for name, sub in properties.items()}
    if kind == "array":
        return [schema_example(schema.get("items"))] * int(schema.get("minItems", 0))
    if kind == "string":
        return "x" * int(schema.get("minLength", 0))
    if kind in ("integer", "number"):
        low = float(schema.get("minimum", schema.get("exclusiveMinimum")) or 0)
        return int(low) + (1 if "exclusiveMinimum" in schema and "minimum" not in schema else 0)
    if kind == "boolean":
        return True
    return None

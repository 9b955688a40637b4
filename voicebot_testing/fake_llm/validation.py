"""The Messages API's request rules, as strict as the real API: what it refuses, the fake refuses."""

from __future__ import annotations

import re
from typing import Any

from .replies import _blocks

_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")

_TOP_LEVEL_FIELDS = frozenset({
    "model", "max_tokens", "messages", "system", "stream", "temperature", "top_p", "top_k",
    "stop_sequences", "metadata", "tools", "tool_choice", "thinking", "service_tier",
    "container", "mcp_servers", "context_management", "output_config", "output_format",
    "inference_geo", "cache_control",
})


class InvalidRequest(Exception):
    """A request the real Messages API would answer 400 (``invalid_request_error``)."""

    pass


def known_models() -> frozenset[str]:
    """The model names the pinned anthropic SDK knows: the real API answers 404 to others."""
    import typing

    from anthropic.types.model import Model

    def names(kind: Any) -> list[str]:
        return [a for arg in typing.get_args(kind) for a in ([arg] if isinstance(arg, str) else names(arg))]
    return frozenset(names(Model))


def _validate_tool_choice(body: dict[str, Any]) -> None:
    choice = body.get("tool_choice")
    if choice is None:
        return
    if not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none"):
        raise InvalidRequest("tool_choice: Input tag does not match any of the expected tags: 'auto', 'any', "
                             "'tool', 'none'")
    if choice["type"] == "tool":
        offered = {t.get("name") for t in body.get("tools") or [] if isinstance(t, dict)}
        if not isinstance(choice.get("name"), str):
            raise InvalidRequest("tool_choice.tool.name: Field required")
        if choice["name"] not in offered:
            raise InvalidRequest(f"tool_choice: tool '{choice['name']}' not found in tools")


def _validate_tools(body: dict[str, Any]) -> None:
    _validate_tool_choice(body)
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise InvalidRequest("tools: Input should be a valid list")
        for index, tool in enumerate(tools):
            if not isinstance(tool, dict) or not _TOOL_NAME.match(str(tool.get("name", ""))):
                raise InvalidRequest(f"tools.{index}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'")
            schema = tool.get("input_schema")
            if not isinstance(schema, dict) or schema.get("type") != "object":
                raise InvalidRequest(f"tools.{index}.input_schema: Input should be an object schema")
    messages = body["messages"]
    uses_tools = any(b.get("type") in ("tool_use", "tool_result") for m in messages for b in _blocks(m))
    if uses_tools and not tools:
        raise InvalidRequest("Requests which include `tool_use` or `tool_result` blocks must define tools.")
    for index, message in enumerate(messages):
        used = [b.get("id") for b in _blocks(message) if b.get("type") == "tool_use"]
        answered = [b.get("tool_use_id") for b in _blocks(message) if b.get("type") == "tool_result"]
        before = [b.get("id") for b in _blocks(messages[index - 1]) if b.get("type") == "tool_use"] if index else []
        if answered and (message["role"] != "user" or set(answered) - set(before)):
            raise InvalidRequest(f"messages.{index}.content: unexpected `tool_use_id` found in `tool_result` "
                                 "blocks. Each `tool_result` block must have a corresponding `tool_use` block "
                                 "in the previous message.")
        if used and message["role"] == "assistant" and index < len(messages) - 1:
            following = messages[index + 1]
            results = {b.get("tool_use_id") for b in _blocks(following) if b.get("type") == "tool_result"}
            if following["role"] != "user" or set(used) - results:
                raise InvalidRequest(f"messages.{index + 1}: `tool_use` ids were found without `tool_result` "
                                     "blocks immediately after. Each `tool_use` block must have a "
                                     "corresponding `tool_result` block in the next message.")


def validate(body: Any) -> None:
    """Raise InvalidRequest for what the real Messages API answers with 400."""
    if not isinstance(body, dict):
        raise InvalidRequest("body must be a JSON object")
    extra = set(body) - _TOP_LEVEL_FIELDS
    if extra:
        raise InvalidRequest(f"{sorted(extra)[0]}: Extra inputs are not permitted")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise InvalidRequest("model: Field required")
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise InvalidRequest("max_tokens: Field required")
    if max_tokens < 1:
        raise InvalidRequest("max_tokens: Input should be greater than or equal to 1")
    system = body.get("system")
    if system is not None and not isinstance(system, (str, list)):
        raise InvalidRequest("system: Input should be a valid string or list of text blocks")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages: at least one message is required")
    first = messages[0]
    if not isinstance(first, dict) or first.get("role") != "user":
        raise InvalidRequest("messages: first message must use the \"user\" role")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or set(message) - {"role", "content"}:
            raise InvalidRequest(f"messages.{index}: must have only role and content")
        if message.get("role") not in ("user", "assistant"):
            raise InvalidRequest(f"messages.{index}.role: Input should be 'user' or 'assistant'")
        content = message.get("content")
        final_assistant = index == len(messages) - 1 and message["role"] == "assistant"
        if isinstance(content, str):
            if not content.strip() and not final_assistant:
                raise InvalidRequest(f"messages.{index}: all messages must have non-empty content "
                                     "except for the optional final assistant message")
        elif isinstance(content, list):
            if not content and not final_assistant:
                raise InvalidRequest(f"messages.{index}: all messages must have non-empty content "
                                     "except for the optional final assistant message")
            for block in content:
                if not isinstance(block, dict) or "type" not in block:
                    raise InvalidRequest(f"messages.{index}.content: blocks need a type")
                if block["type"] == "text" and not str(block.get("text", "")).strip():
                    raise InvalidRequest(f"messages.{index}.content: text content blocks must "
                                         "contain non-whitespace text")
                if block["type"] == "tool_use" and (message["role"] != "assistant" or not block.get("id")
                                                    or not isinstance(block.get("input"), dict)):
                    raise InvalidRequest(f"messages.{index}.content: tool_use blocks need an id and an input "
                                         "object, in an assistant message")
        else:
            raise InvalidRequest(f"messages.{index}.content: Input should be a string or a list")
    _validate_tools(body)

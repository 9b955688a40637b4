"""A Chat Completions request, read as a turn of a call: whose call, what the caller said since the last
turn, what they heard of the last reply, and what the platform lets voicebot do.

The platform's ``messages`` are the truth of what was said: the caller's new words are the user messages
after the last assistant message, and that assistant message is what the caller heard of voicebot's last
reply (shorter, when they talked over it). The platform's own system messages are not voicebot's prompt:
the call's prompt is voicebot's (SYSTEM_PROMPT, its variables, CONTEXT_URL's instructions), and they are
ignored.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from ..exceptions import InvalidEvent
from ..web.validation import MAX_ID_CHARS
from .dialects import Dialect, Headers

MAX_MESSAGES = 1000  # a long call's history is a few hundred messages
MAX_NUMBER_CHARS = 64


@dataclass(frozen=True)
class Ask:
    """One request: the call it is a turn of, and what it says."""

    call_id: str
    words: str  # the caller's words since the last turn ("" when none: the call's opening)
    heard: str | None  # the platform's last assistant message: what the caller heard of the last reply
    event_id: str  # the same messages sent again are the same turn
    offered: frozenset[str]  # the names of the tools the request offers (the platform's own)
    model: str
    stream: bool
    include_usage: bool
    caller: str | None
    called: str | None
    variables: dict[str, str]


def text_of(content: Any) -> str:
    """The words of a message's content: a string, or text parts (``{"type": "text", "text"}``)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(part["text"] for part in content
                        if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str))
    return ""


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidEvent("'messages' must be a non-empty array of messages")
    if len(messages) > MAX_MESSAGES:
        raise InvalidEvent(f"'messages' holds more than {MAX_MESSAGES} messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidEvent(f"messages[{index}] must be an object with a 'role'")
        content = message.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise InvalidEvent(f"messages[{index}].content must be a string or an array of parts")
    return messages


def _caller_words(messages: list[dict[str, Any]], limit: int) -> tuple[str, str | None]:
    """The user messages after the last assistant message, joined; and that assistant message's words."""
    words: list[str] = []
    heard = None
    for message in reversed(messages):
        role = message["role"]
        if role == "assistant":
            heard = text_of(message.get("content")).strip()
            break
        if role == "user":
            words.append(text_of(message.get("content")).strip())
    said = " ".join(w for w in reversed(words) if w)
    try:
        said.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidEvent("a user message is not valid Unicode text") from None
    if len(said) > limit:
        raise InvalidEvent(f"the caller's words are longer than {limit} characters")
    return said, heard


def _offered(body: dict[str, Any]) -> frozenset[str]:
    tools = body.get("tools")
    if tools is None:
        return frozenset()
    if not isinstance(tools, list):
        raise InvalidEvent("'tools' must be an array")
    names = set()
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if isinstance(name, str):
            names.add(name)
    return frozenset(names)


def _text(value: Any, field: str, limit: int) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise InvalidEvent(f"{field} must be text")
    value = value.strip()
    if len(value) > limit or not value.isprintable():
        raise InvalidEvent(f"{field} must be printable text of at most {limit} characters")
    return str(value)


def read_ask(body: dict[str, Any], headers: Headers, dialect: Dialect, max_words: int) -> Ask:
    """The request as a turn, or InvalidEvent saying what is wrong (the 400's message)."""
    messages = _messages(body)
    call_id = _text(dialect.call_id(body, headers), "the call id", MAX_ID_CHARS)
    if call_id is None:
        raise InvalidEvent(f"no call id: {dialect.where_call_id}")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidEvent("'stream' must be true or false")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise InvalidEvent("'stream_options' must be an object")
    model = body.get("model") or "voicebot"
    if not isinstance(model, str):
        raise InvalidEvent("'model' must be a string")
    words, heard = _caller_words(messages, max_words)
    # Only what was said names the turn: a platform may send other fields differently each time.
    said = [[m["role"], text_of(m.get("content"))] for m in messages if m["role"] in ("user", "assistant")]
    event_id = hashlib.sha256(json.dumps(said, ensure_ascii=False).encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return Ask(call_id=call_id, words=words, heard=heard, event_id=event_id, offered=_offered(body),
               model=model[:MAX_ID_CHARS], stream=stream, include_usage=options.get("include_usage") is True,
               caller=_text(dialect.caller(body, headers), "the caller's number", MAX_NUMBER_CHARS),
               called=_text(dialect.called(body, headers), "the called number", MAX_NUMBER_CHARS),
               variables=dialect.variables(body))

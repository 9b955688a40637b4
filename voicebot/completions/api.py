"""The brain endpoints in the API document: an OpenAI chat completion, as each front end sends it."""

from __future__ import annotations

from ..web.openapi import Operation, Schema, text
from ..web.validation import MAX_ID_CHARS
from .ask import MAX_MESSAGES
from .dialects import Dialect

# OpenAI's error shape, which OpenAI clients read: {"error": {"message", "type", "param", "code"}}.
OPENAI_ERROR: Schema = {
    "type": "object", "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["message", "type"],
                             "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                                            "param": {}, "code": {"type": ["string", "null"]}}}}}

_BODY: Schema = {
    "type": "object", "required": ["messages"],
    "properties": {
        "messages": {"type": "array", "minItems": 1, "maxItems": MAX_MESSAGES,
                     "items": {"type": "object", "required": ["role"],
                               "properties": {"role": {"type": "string"},
                                              "content": {"type": ["string", "array", "null"]}}}},
        "model": {"type": ["string", "null"]},
        "stream": {"type": "boolean"},
        "stream_options": {"type": ["object", "null"]},
        "tools": {"type": ["array", "null"]},
    },
}

_COMPLETION: Schema = {
    "type": "object", "required": ["id", "object", "choices"],
    "properties": {"id": {"type": "string"}, "object": {"const": "chat.completion"}, "model": {"type": "string"},
                   "choices": {"type": "array"}, "usage": {}}}

# The request headers each front end may name the call and its numbers with.
_HEADERS = {"completions": ("X-Call-Id", "X-Caller-Number", "X-Called-Number"),
            "elevenlabs": ("X-Conversation-Id", "X-Caller-Number", "X-Called-Number"), "vapi": ()}


def _body(dialect: Dialect) -> Schema:
    if dialect.name != "vapi":
        return _BODY  # the call may be named in a header: no field of the body is required for it
    # Vapi names the call in the body alone.
    return {**_BODY, "required": ["messages", "call"],
            "properties": {**_BODY["properties"],
                           "call": {"type": "object", "required": ["id"], "properties": {"id": text(MAX_ID_CHARS)},
                                    "description": dialect.where_call_id}}}


def operation(dialect: Dialect) -> Operation:
    """``POST <prefix>/chat/completions`` as ``dialect`` sends it."""
    return Operation(
        f"One turn for {dialect.title}: the caller's words in, the reply out (streamed with \"stream\": true). "
        f"The call: {dialect.where_call_id}.",
        answers={200: ("the reply: a chat.completion, or its chunks as server-sent events", _COMPLETION)},
        errors=(403, 415, 503), security="completionsToken", tags=("the brain (custom LLM)",), body=_body(dialect),
        streams=True, error_schema=OPENAI_ERROR,
        parameters=tuple({"name": name, "in": "header", "required": False,
                          "schema": {"type": "string", "maxLength": 128}} for name in _HEADERS.get(dialect.name, ())))

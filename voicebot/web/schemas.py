"""The JSON Schemas the API document shares: identifiers, numbers, variables."""

from __future__ import annotations

from .. import placeholders
from .openapi import Schema, text
from .validation import MAX_ID_CHARS

IDENTIFIER: Schema = {**text(MAX_ID_CHARS), "description": "printable text, at most 128 characters"}
E164: Schema = {"type": "string", "pattern": r"^\+[1-9][0-9]{6,14}$",
                "description": "a number in E.164 form, such as +15551234567"}
VARIABLES: Schema = {
    "type": ["object", "null"], "maxProperties": placeholders.MAX_VARIABLES,
    "propertyNames": {"pattern": placeholders.NAME.pattern},
    "additionalProperties": {"anyOf": [
        {"type": "string", "maxLength": placeholders.MAX_VALUE_CHARS, "not": {"pattern": r"\{\{|\}\}"}},
        {"type": "number"}]},
    "description": "the call's {{placeholders}}: names of letters, digits and _, values text or numbers",
}

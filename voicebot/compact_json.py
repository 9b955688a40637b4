"""Compact JSON for what a turn writes: the model's request body, the call's session, its record.

orjson encodes a whole history many times faster than the standard library
(the body sent to the model and the session written to Redis are both a
history, every turn: docs/benchmarks.md has the figures), and its output is what
``json.dumps(value, separators=(",", ":"), ensure_ascii=False)`` writes. What it
refuses, the standard library encodes as before: integers past 64 bits (a
tool's arguments may hold one) and lone surrogates (a transcript's JSON may
escape one). Reading stays with the standard library, which keeps big
integers whole where orjson would turn them into floats.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

_OPTIONS = orjson.OPT_NON_STR_KEYS  # keys that are not strings become strings, as json.dumps makes them


def dumps(value: Any) -> bytes:
    """``value`` as compact JSON in UTF-8."""
    try:
        return orjson.dumps(value, option=_OPTIONS)
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps(value, separators=(",", ":")).encode()

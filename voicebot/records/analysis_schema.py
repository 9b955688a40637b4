"""The operator's analysis schema, made safe to validate a model's answer against inside a serving worker.

Two things in a JSON schema can stall whoever validates with it, and the
worker that does is the one answering other calls' turns:

- a ``pattern`` (or a ``patternProperties`` key) that backtracks: Python's
  ``re`` takes exponential time on ``^(a+)+$`` and holds the GIL meanwhile
  (one froze other calls' turns for 12.9 s). Patterns here run on RE2
  (Google's ``google-re2``), whose matching is linear in the text; a pattern
  RE2 cannot run (lookaround, backreferences) is refused at start-up;
- a ``$ref`` jsonschema cannot resolve locally: by default it fetches it over
  the network, with no timeout (records went out 25 to 195 s late). Here
  nothing is ever fetched, and every ``$ref`` is resolved at start-up, so
  one that cannot be is refused then, with the setting named.

The data schema is its own resource (``DATA_URI``), so its ``#/$defs/...``
references mean the data schema's own definitions, as its author wrote them,
not those of the tool schema it is placed in.
"""

from __future__ import annotations

from typing import Any, Iterator

import re2  # type: ignore[import-untyped]
from jsonschema import Draft202012Validator, ValidationError
from jsonschema.validators import extend
from jsonschema_specifications import REGISTRY as SPECIFICATIONS  # type: ignore[import-untyped]
from referencing import Registry
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012

DATA_URI = "urn:voicebot:analysis-data"

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # a refused pattern is said once, in the start-up error, not by RE2's logger


def _compiled(pattern: str) -> Any:
    return re2.compile(pattern, _OPTIONS)


def _pattern(validator: Any, pattern: str, instance: Any, schema: dict[str, Any]) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _compiled(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(validator: Any, patterns: dict[str, Any], instance: Any,
                        schema: dict[str, Any]) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        compiled = _compiled(pattern)
        for name, value in instance.items():
            if compiled.search(name):
                yield from validator.descend(value, subschema, path=name, schema_path=pattern)


# Draft 2020-12 with its regular expressions on RE2.
SafeValidator: Any = extend(Draft202012Validator,  # type: ignore[no-untyped-call]
                            {"pattern": _pattern, "patternProperties": _pattern_properties})


def registry_of(data: dict[str, Any]) -> Registry[Any]:
    """The meta-schemas and the data schema, and nothing that would be fetched."""
    registry: Registry[Any] = SPECIFICATIONS.with_resource(DATA_URI, DRAFT202012.create_resource(data))
    return registry


def validator_for(tool_schema: dict[str, Any], data: dict[str, Any] | None) -> Any:
    """Validates a whole analysis: the tool's schema, with its ``data`` as the data schema's own resource."""
    if data is None:
        return SafeValidator(tool_schema, registry=SPECIFICATIONS)
    properties = {**tool_schema["properties"], "data": {"$ref": DATA_URI}}
    return SafeValidator({**tool_schema, "properties": properties}, registry=registry_of(data))


def problems(data: dict[str, Any]) -> list[str]:
    """What in the data schema cannot be validated safely: patterns RE2 cannot run, references that do not
    resolve inside the schema. Each one line."""
    found: list[str] = []
    resolver = registry_of(data).resolver(DATA_URI)
    for where, key, value in _walk(data, "data"):
        if key == "pattern" and isinstance(value, str):
            found.extend(_pattern_problem(where, value))
        elif key == "patternProperties" and isinstance(value, dict):
            for pattern in value:
                found.extend(_pattern_problem(f"{where}/patternProperties", pattern))
        elif key == "$ref" and isinstance(value, str):
            try:
                resolver.lookup(value)
            except Unresolvable:
                found.append(f"{where}: $ref {value!r} does not resolve inside the schema (voicebot fetches "
                             "nothing: put the definition in the schema's $defs)")
    return found


def _pattern_problem(where: str, pattern: str) -> list[str]:
    try:
        _compiled(pattern)
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        return [f"{where}: pattern {pattern!r} cannot run in linear time ({reason}); lookaround and "
                "backreferences are not supported"]
    return []


def _walk(node: Any, where: str) -> Iterator[tuple[str, str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield where, key, value
            yield from _walk(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, f"{where}/{index}")

"""The HTTP API as a document: ``/openapi.json`` (OpenAPI 3.1), built from the views it describes.

A view that answers JSON carries its ``Operation`` (``@documented``): its
summary, its request body's JSON Schema, its answers and who may call it.
The document is built from the app's own routes, so it names only what this
app serves, with the limits its settings set (MAX_TRANSCRIPT_CHARS...). The
same schema checks each request's body before the view reads it: what the
document calls invalid is refused with a 400 ``invalid_event`` saying where,
never half-read. The view's own checks (a blank call id, a duplicate phone)
come after, and refuse more, never less.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, TypeVar, cast

from flask import Blueprint, Flask, Response, current_app, jsonify
import jsonschema_rs
from jsonschema import Draft202012Validator, ValidationError

from ..exceptions import InvalidEvent
from . import json_body

Schema = dict[str, Any]
# A schema, or how to make one from the app's settings (a limit they set).
SchemaOf = Schema | Callable[[Mapping[str, Any]], Schema]
F = TypeVar("F", bound=Callable[..., Any])

ERROR: Schema = {"type": "object", "required": ["error", "message"],
                 "properties": {"error": {"type": "string"}, "message": {"type": "string"}}}

# Why each error status is answered, for an operation's answers; each carries ERROR.
ERRORS = {
    400: "invalid_event: the body is not what this document says (the message says where)",
    401: "unauthorized: the bearer token is missing or wrong",
    403: "forbidden: refused for this caller or destination (the error says why)",
    404: "not found, or off until its settings are set (the error says which)",
    409: "conflict: the call is held elsewhere",
    413: "the body is too large",
    415: "a local trial takes only Content-Type: application/json",
    424: "the platform's API refused the request; sending it again will not help",
    502: "the platform's API gave an answer voicebot could not use",
    503: "overloaded, or the store or the platform is unavailable: send it again after Retry-After",
}

SECURITY = {
    "webhookToken": {"type": "http", "scheme": "bearer",
                     "description": "WEBHOOK_TOKEN. Unset: a local trial, served only to this machine."},
    "operatorToken": {"type": "http", "scheme": "bearer", "description": "OUTBOUND_TOKEN, else WEBHOOK_TOKEN."},
    "completionsToken": {"type": "http", "scheme": "bearer", "description": "COMPLETIONS_TOKEN."},
}


def text(most: int) -> Schema:
    """A string with a character other than white space, of at most ``most`` characters."""
    return {"type": "string", "maxLength": most, "pattern": r"\S"}


def optional_text(most: int) -> Schema:
    """Absent, null, empty, or ``text(most)``."""
    return {"type": ["string", "null"], "maxLength": most, "pattern": r"^$|\S"}


@dataclass(frozen=True)
class Operation:
    """One documented operation: what it does, what it takes, what it answers, who may call it."""

    summary: str
    answers: dict[int, tuple[str, SchemaOf]]  # the answers it gives besides errors: status -> (what, schema)
    errors: tuple[int, ...] = ()
    body: SchemaOf | None = None
    body_limit: Callable[[Mapping[str, Any]], int] | None = None  # bytes, when larger than MAX_BODY_BYTES
    security: str | None = None
    parameters: tuple[Schema, ...] = ()  # path parameters and headers, as OpenAPI writes them
    streams: bool = False  # 200 may be text/event-stream too (the body's "stream": true)
    error_schema: Schema | None = None  # the errors' shape, where it is not ERROR (OpenAI's, for its clients)
    tags: tuple[str, ...] = field(default=())

    def body_schema(self, config: Mapping[str, Any]) -> Schema | None:
        return _resolved(self.body, config) if self.body is not None else None


def _resolved(schema: SchemaOf, config: Mapping[str, Any]) -> Schema:
    return schema(config) if callable(schema) else schema


def documented(operation: Operation) -> Callable[[F], F]:
    """Mark a view as ``operation``, and check its body against the operation's schema before it runs."""

    def mark(view: F) -> F:
        @functools.wraps(view)
        def checked(*args: Any, **kwargs: Any) -> Any:
            if operation.body is not None:
                limit = operation.body_limit(current_app.config) if operation.body_limit else None
                _validator(operation).check(json_body(limit))
            return view(*args, **kwargs)

        checked.openapi = operation  # type: ignore[attr-defined]
        return cast(F, checked)

    return mark


class _Validator:
    """One operation's body schema, compiled for this app: a fast yes, and the words for a no.

    jsonschema-rs decides (the turn's path pays half a microsecond); a body it refuses is read again by
    jsonschema, whose error says where and what in voicebot's own words. Their regular expressions differ
    on a few control characters taken as white space: a body the second finds nothing wrong with goes on
    to the view's own checks, which refuse blank text either way.
    """

    def __init__(self, schema: Schema) -> None:
        self.fast = jsonschema_rs.validator_for(schema)
        self.words = Draft202012Validator(schema)

    def check(self, body: Any) -> None:
        try:
            if self.fast.is_valid(body):
                return
        except UnicodeEncodeError:
            pass  # a lone surrogate ("\ud800": JSON, but no character) is no Rust string: the view says so
        error = next(iter(self.words.iter_errors(body)), None)
        if error is not None:
            raise InvalidEvent(_message(error))


def _validator(operation: Operation) -> _Validator:
    """The operation's body schema compiled once per app (its limits are the app's settings)."""
    validators: dict[int, _Validator] = current_app.extensions.setdefault("openapi_validators", {})
    validator = validators.get(id(operation))
    if validator is None:
        validator = validators[id(operation)] = _Validator(operation.body_schema(current_app.config) or {})
    return validator


_TYPE_WORDS = {"string": "a string", "object": "a JSON object", "array": "an array", "number": "a number",
               "integer": "a whole number", "boolean": "true or false", "null": "null"}


def _message(error: ValidationError) -> str:
    """What is wrong, in the words voicebot's own checks use ("'call_id' is empty"), never quoting the value."""
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path).lstrip(".")
    rule, instance = error.validator, error.instance
    value: Any = error.validator_value
    where = f"'{path}'" if path else "the body"
    if rule == "required":
        missing = next((name for name in value if isinstance(instance, dict) and name not in instance), "?")
        hint = error.schema.get("properties", {}).get(missing, {}).get("description") \
            if isinstance(error.schema, dict) else None
        return f"'{missing}' is missing" + (f" from '{path}'" if path else "") + (f": {hint}" if hint else "")
    if rule == "type" and instance is None:
        return f"{where} is missing"
    if rule == "type":
        kinds = [value] if isinstance(value, str) else list(value)
        return f"{where} must be " + " or ".join(_TYPE_WORDS.get(k, k) for k in kinds if k != "null")
    if rule == "pattern" and value in (r"\S", r"^$|\S"):
        return f"{where} is empty"
    if rule == "maxLength":
        return f"{where} is longer than {value} characters"
    if rule in ("maxItems", "maxProperties"):
        return f"{where} holds more than {value}"
    if rule in ("minItems", "minProperties"):
        return f"{where} must hold at least {value}"
    if rule in ("enum", "const"):
        allowed = [v for v in (value if rule == "enum" else [value]) if v not in ("", None)]
        return f"{where} must be one of {', '.join(str(v) for v in allowed)}; got {str(instance)[:40]!r}"
    if rule in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        return f"{where} must be {'at least' if 'inimum' in rule else 'at most'} {value}"
    if rule == "pattern":
        described = error.schema.get("description") if isinstance(error.schema, dict) else None
        return f"{where} must be {described}" if described else f"{where} is not in the form {value}"
    return f"{where} does not meet '{rule}' (see /openapi.json)"


def document(app: Flask) -> Schema:
    """The OpenAPI 3.1 document of what ``app`` serves."""
    paths: dict[str, dict[str, Any]] = {}
    used: set[str] = set()
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        operation: Operation | None = getattr(app.view_functions.get(rule.endpoint), "openapi", None)
        if operation is None:
            continue
        path = _openapi_path(rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            paths.setdefault(path, {})[method.lower()] = _operation(operation, app.config, rule.endpoint)
        if operation.security:
            used.add(operation.security)
    return {
        "openapi": "3.1.0",
        "info": {"title": "voicebot", "version": _version(),
                 "description": "voicebot's HTTP API: the article's webhook contract, calls and campaigns, the "
                                "brain endpoints for front ends that call a custom LLM, and health. Errors are "
                                "JSON: {\"error\", \"message\"}."},
        "paths": paths,
        "components": {"schemas": {"Error": ERROR},
                       "securitySchemes": {name: SECURITY[name] for name in sorted(used)}},
    }


def _operation(operation: Operation, config: Mapping[str, Any], endpoint: str) -> Schema:
    responses: dict[str, Any] = {}
    for status, (what, schema) in sorted(operation.answers.items()):
        content: Schema = {"application/json": {"schema": _resolved(schema, config)}}
        if operation.streams and status == 200:
            # Each server-sent event: its data, a JSON chunk (or [DONE] at the end).
            content["text/event-stream"] = {"schema": {"type": "object", "required": ["data"],
                                                       "properties": {"data": {"type": "string"}}}}
        responses[str(status)] = {"description": what, "content": content}
    errors = set(operation.errors)
    if operation.body is not None:
        errors |= {400, 413}
    if operation.security:
        errors.add(401)
    error = operation.error_schema or {"$ref": "#/components/schemas/Error"}
    for status in sorted(errors):
        responses[str(status)] = {"description": ERRORS[status], "content": {"application/json": {"schema": error}}}
    described: Schema = {"operationId": endpoint.replace(".", "_"), "summary": operation.summary,
                         "responses": responses}
    if operation.tags:
        described["tags"] = list(operation.tags)
    if operation.parameters:
        described["parameters"] = list(operation.parameters)
    body = operation.body_schema(config)
    if body is not None:
        described["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if operation.security:
        described["security"] = [{operation.security: []}]
    return described


def _openapi_path(rule: str) -> str:
    """``/campaigns/<campaign_id>/<any(pause, resume, cancel):action>`` as ``/campaigns/{campaign_id}/{action}``."""
    out, rest = "", rule
    while "<" in rest:
        before, _, tail = rest.partition("<")
        inside, _, rest = tail.partition(">")
        out += before + "{" + inside.rsplit(":", 1)[-1] + "}"
    return out + rest


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("voicebot")
    except Exception:  # not installed (a checkout run in place)
        return "0"


bp = Blueprint("openapi", __name__)


@bp.get("/openapi.json")
def openapi_json() -> Response:
    """The document; no token needed (it says what the API takes, nothing of any call)."""
    return jsonify(document(current_app._get_current_object()))  # type: ignore[attr-defined]

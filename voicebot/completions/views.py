"""``POST {prefix}/chat/completions`` for each dialect: a turn of a call, answered as Chat Completions.

Thin: the request is read (``read_ask``), the turn runs (``Answer``), and what it says is written as
``chat.completion.chunk`` events (or one ``chat.completion``). Every error leaves in OpenAI's shape, which
every client of these front ends reads, with the status voicebot's own handlers give it.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Iterator

from flask import Blueprint, Response, current_app, g, jsonify, request, stream_with_context

from ..deadline import RESPONSE_BUDGET, Deadline
from ..web import conversation_of, json_body, start_timing
from ..web.access import bearer_matches, local_trial_refusal
from ..web.admission import admit, release
from ..web.errors import as_json_error, json_error
from ..web.openapi import documented
from . import api
from .answer import Answer
from .ask import Ask, read_ask
from .chunks import DONE, Completion, error_body, tool_call
from ..tools import Action
from .dialects import Dialect
from .speaker import Act, AnswerSpeaker, Done, Failed, Words

log = logging.getLogger(__name__)


def token(config: Any) -> str:
    """The token front ends send as ``Authorization: Bearer``: COMPLETIONS_TOKEN, else WEBHOOK_TOKEN."""
    return str(config["COMPLETIONS_TOKEN"] or config["WEBHOOK_TOKEN"])


def in_openai_shape(response: Response) -> Response:
    """voicebot's JSON error (``{"error", "message"}``) as OpenAI's, with the same status and headers."""
    try:
        mine = json.loads(response.get_data())
    except ValueError:
        mine = {}
    kind = str(mine.get("error") or "error")
    kind_of = "authentication_error" if response.status_code == 401 else (
        "invalid_request_error" if response.status_code < 500 else "server_error")
    response.set_data(json.dumps(error_body(kind_of, str(mine.get("message") or kind), code=kind)))
    return response


def check_access() -> Response | None:
    """Before any model spend: the front end's bearer token, or (with none set) a local trial only."""
    expected = token(current_app.config)
    if expected:
        if not bearer_matches(request, expected):
            return in_openai_shape(json_error(401, "unauthorized", "send Authorization: Bearer <COMPLETIONS_TOKEN>",
                                              **{"WWW-Authenticate": "Bearer"}))
    else:
        refusal = local_trial_refusal(request)
        if refusal is not None:
            return in_openai_shape(json_error(*refusal))
    refused = admit()
    return in_openai_shape(refused) if refused is not None else None


def blueprint(dialect: Dialect) -> Blueprint:
    """The dialect's endpoint, named after its platform."""
    bp = Blueprint(dialect.name, __name__, url_prefix=dialect.prefix)
    bp.before_request(start_timing)
    bp.before_request(check_access)
    bp.teardown_request(release)

    @bp.errorhandler(Exception)
    def openai_error(exc: Exception) -> Response:
        return in_openai_shape(as_json_error(exc))

    @bp.post("/chat/completions")
    @documented(api.operation(dialect))
    def chat_completions() -> Response:
        ask = read_ask(json_body(), request.headers, dialect, current_app.config["MAX_TRANSCRIPT_CHARS"])
        g.call_id = ask.call_id
        speaker = AnswerSpeaker(can_transfer=dialect.tool_for(_TRANSFER, ask.offered) is not None)
        answer = Answer(conversation_of(dialect.name), ask, speaker, Deadline(RESPONSE_BUDGET))
        if not ask.stream:
            return jsonify(_whole(answer.run_here(), ask, dialect))
        first = answer.start().next_said()
        if isinstance(first, Failed):
            raise first.error  # nothing was said yet: the request gets the error's own status
        return Response(stream_with_context(_chunks(first, answer, ask, dialect)), mimetype="text/event-stream",
                        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    return bp


# Only to ask whether a request offers the platform's hand-off tool (the model may hand off only then).
_TRANSFER = Action("transfer")


def _tool_calls(action_said: list[Act], ask: Ask, dialect: Dialect, line: str) -> list[dict[str, Any]]:
    """voicebot's action as the platform's own tool, where the request offers one (otherwise none: the
    platform hears the goodbye or hold line, and voicebot's part of the call has ended all the same)."""
    calls: list[dict[str, Any]] = []
    for said in action_said:
        name = dialect.tool_for(said.action, ask.offered)
        if name is not None:
            calls.append(tool_call(len(calls), name, dialect.arguments_for(said.action, line)))
    return calls


def _chunks(first: Any, answer: Answer, ask: Ask, dialect: Dialect) -> Iterator[bytes]:
    completion = Completion(ask.model)
    said: list[str] = []
    acts: list[Act] = []
    last: Words | None = None
    try:
        yield completion.chunk({"role": "assistant", "content": ""})
        item = first
        while not isinstance(item, (Done, Failed)):
            if isinstance(item, Words) and item.text:
                text = item.after(last)
                yield completion.chunk({"content": text})
                said.append(text)
                last = item
            elif isinstance(item, Act):
                acts.append(item)
            item = answer.next_said()
        if isinstance(item, Failed):  # the turn failed after words were said: they stand, and end here
            log.warning("turn failed mid-answer call_id=%s: %s", ask.call_id, item.error)
            item = Done({})
        calls = _tool_calls(acts, ask, dialect, "".join(said).strip())
        if calls:
            yield completion.chunk({"tool_calls": calls})
        yield completion.chunk({}, finish="tool_calls" if calls else "stop")
        if ask.include_usage:
            yield completion.usage_chunk(item.tokens)
        yield DONE
    finally:
        answer.stop()  # the platform went away (GeneratorExit) or the answer is whole: say no more


def _whole(answer: Answer, ask: Ask, dialect: Dialect) -> dict[str, Any]:
    said: list[str] = []
    acts: list[Act] = []
    last: Words | None = None
    while True:
        item = answer.next_said()
        if isinstance(item, Failed):
            if not said:
                raise item.error
            item = Done({})
        if isinstance(item, Done):
            break
        if isinstance(item, Words) and item.text:
            said.append(item.after(last))
            last = item
        elif isinstance(item, Act):
            acts.append(item)
    text = "".join(said).strip()
    return Completion(ask.model).whole(text, _tool_calls(acts, ask, dialect, text), item.tokens)

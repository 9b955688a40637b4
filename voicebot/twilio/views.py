"""Twilio's voice webhooks: a ``<Gather input="speech">`` loop, one request per turn.

``/voice`` (the number's "a call comes in" URL) greets inside a <Gather>;
Twilio posts what the caller said (``SpeechResult``) to the Gather's
``action``, ``/turn?n=<turn>``, which answers with the reply inside the next
<Gather>. ``n`` makes each turn's request its own event: Twilio sending it
again gets the same reply, not a second model call. ``/status`` (the
number's status callback) ends the call and makes its record.

Everything a caller can hear is TwiML with status 200, failures included:
for anything else Twilio plays "an application error has occurred" and hangs up.
"""

from __future__ import annotations

import logging
import re
from typing import Any, TypedDict, cast
from urllib.parse import urlencode

from flask import Blueprint, Response, current_app, g, request
from werkzeug.exceptions import HTTPException

from .. import socket_ticket
from ..conversation import Conversation
from ..deadline import RESPONSE_BUDGET, Deadline
from ..exceptions import InvalidEvent, StoreFull, VoicebotError
from ..session import CallContext, Channel
from ..speaker import ResponseSpeaker
from ..turn import Outcome
from ..web import conversation_of, start_timing, with_llm_timing
from ..web.errors import as_json_error, json_error
from ..web.validation import optional_text
from ..relay.handshake import open_socket
from ..runtime import runtime
from .state import twilio_state
from .signature import HEADER, base_url, is_from_twilio, websocket_url
from .twiml import END_REASONS, Voice, how_it_ended, nothing

log = logging.getLogger(__name__)

bp = Blueprint("twilio", __name__, url_prefix="/webhook/twilio")
bp.before_request(start_timing)

# Twilio's call ids: "CA" and 32 hex digits.
CALL_SID = re.compile(r"CA[0-9a-fA-F]{32}")
MAX_CALLER_CHARS = 64
METHODS = ["POST", "GET"]  # a number's webhooks may be set to either


def _twiml(body: str, status: int = 200) -> Response:
    return Response(body, status=status, mimetype="text/xml")


def _conversation() -> Conversation:
    return conversation_of(bp.name)  # the platform's name, as voicebot.twilio names it


def _voice() -> Voice:
    return twilio_state().voice


def _fields() -> dict[str, Any]:
    return (request.form if request.method == "POST" else request.args).to_dict()


def _call_sid(fields: dict[str, Any]) -> str:
    sid = fields.get("CallSid", "")
    if not isinstance(sid, str) or not CALL_SID.fullmatch(sid):
        raise InvalidEvent("'CallSid' is missing or is not a Twilio call id")
    g.call_id = sid
    return sid


def _turn_url(n: int) -> str:
    return f"{base_url(request, current_app.config)}{bp.url_prefix}/turn?n={n}"


def _turn_number() -> int:
    raw = request.args.get("n", "1")
    if not raw.isdigit() or not 1 <= int(raw) <= 100_000:
        raise InvalidEvent("'n' must be the turn's number")
    return int(raw)


@bp.before_request
def check_signature() -> Response | None:
    state = twilio_state()
    validator = state.validator
    if validator is None:
        return json_error(404, "twilio_disabled", state.disabled_because)
    if not is_from_twilio(request, current_app.config, validator):
        # Not Twilio (or a PUBLIC_URL that is not the URL Twilio was given): nothing is read or changed.
        log.warning("Twilio request refused: missing or wrong %s for %s", HEADER, request.path)
        return json_error(403, "invalid_signature", f"missing or wrong {HEADER}")
    return None


@bp.errorhandler(Exception)
def say_sorry(exc: Exception) -> Response:
    """A failure mid-call: the caller hears the fallback and is listened to again, never Twilio's error line."""
    if isinstance(exc, (InvalidEvent, HTTPException)) or request.endpoint in ("twilio.status", "twilio.relay"):
        return as_json_error(exc)  # not Twilio's doing, or nobody is listening (a handshake takes no TwiML)
    if isinstance(exc, VoicebotError):
        log.warning("Twilio %s failed call_id=%s: %s: %s", request.endpoint, g.get("call_id", "-"),
                    type(exc).__name__, exc)
    else:
        log.exception("Twilio %s failed unexpectedly call_id=%s", request.endpoint, g.get("call_id", "-"))
    try:
        next_turn = _turn_number() + 1 if request.endpoint == "twilio.turn" else 1
    except InvalidEvent:
        next_turn = 1
    return _twiml(_voice().listen(current_app.config["FALLBACK_REPLY"], _turn_url(next_turn)))


@bp.route("/voice", methods=METHODS)
def voice() -> Response:
    fields = _fields()
    call_id = _call_sid(fields)
    status = fields.get("CallStatus", "")
    if status in END_REASONS:
        return _twiml(nothing())
    answered_by = fields.get("AnsweredBy", "")
    if fields.get("Direction") == "outbound-api" and (answered_by.startswith("machine") or answered_by == "fax"):
        return _voicemail(call_id, answered_by)
    relaying = current_app.config["TWILIO_MODE"] == "relay"
    admission = runtime().admission
    if not admission.enter():
        # A call not yet answered can be turned away with a busy tone; a turn of a live one never is.
        log.warning("Twilio call refused call_id=%s: this instance is at capacity", call_id)
        return _twiml(_voice().reject_busy())
    try:
        caller = optional_text(fields, "From", MAX_CALLER_CHARS)
        called = optional_text(fields, "To", MAX_CALLER_CHARS)
        tickets: list[str] = []
        attach = (lambda call: tickets.append(socket_ticket.issue(call.channel))) if relaying else None
        greeting = _conversation().start_call(call_id, caller, called=called, attach=attach,
                                              deadline=Deadline(RESPONSE_BUDGET))
    except StoreFull:
        # Held nowhere, the call would hear the fallback on every turn and leave no record: turned away.
        log.warning("Twilio call refused call_id=%s: the session store is full (MAX_LIVE_CALLS)", call_id)
        return _twiml(_voice().reject_busy())
    finally:
        admission.leave()
    if greeting is None:
        return _twiml(_voice().hang_up(""))
    cfg = current_app.config
    if relaying:
        base = f"{base_url(request, cfg)}{bp.url_prefix}"
        # The socket's URL names the call and carries its ticket: Twilio signs the handshake over it.
        socket_url = websocket_url(f"{base}/relay?{urlencode({'call': call_id, 'ticket': tickets[0]})}")
        return _twiml(_voice().relay(greeting, socket_url, f"{base}/relay-end",
                                     voice=cfg["TWILIO_RELAY_VOICE"], tts_provider=cfg["TWILIO_RELAY_TTS_PROVIDER"],
                                     transcription_provider=cfg["TWILIO_RELAY_TRANSCRIPTION_PROVIDER"]))
    return _twiml(_voice().listen(greeting, _turn_url(1)))


def _voicemail(call_id: str, answered_by: str) -> Response:
    """A call voicebot placed reached a machine: the message is left (after the beep), or none, and it ends."""
    conversation = _conversation()
    message = conversation.voicemail_for(call_id)
    conversation.end_call(call_id, reason="voicemail", details={"answered_by": answered_by[:32]},
                          deadline=Deadline(RESPONSE_BUDGET), last_words=message)
    log.info("Twilio call reached a machine call_id=%s answered_by=%s message=%s", call_id, answered_by[:32],
             "left" if message else "none")
    return _twiml(_voice().hang_up(message))


@bp.route("/turn", methods=METHODS)
def turn() -> Response:
    fields = _fields()
    call_id = _call_sid(fields)
    n = _turn_number()
    cfg = current_app.config
    speech = optional_text(fields, "SpeechResult", cfg["MAX_TRANSCRIPT_CHARS"])
    if speech is None:
        return _silence(call_id, n)
    turn = _conversation().take_turn(call_id, speech, optional_text(fields, "From", MAX_CALLER_CHARS),
                                     event_id=f"turn-{n}", speaker=GatherSpeaker(),
                                     deadline=Deadline(RESPONSE_BUDGET))
    if turn.outcome is Outcome.CALL_ENDED:  # the call has ended (hung up, handed on): nothing more to say
        return _twiml(_voice().hang_up(""))
    if turn.outcome is Outcome.DUPLICATE:
        log.info("Twilio turn sent again call_id=%s n=%d: answered from the saved reply", call_id, n)
        return _twiml(_voice().listen(turn.reply or cfg["FALLBACK_REPLY"], _turn_url(n + 1)))
    if turn.action is None:
        return with_llm_timing(_twiml(_voice().listen(turn.reply, _turn_url(n + 1))), turn.llm_seconds)
    # The bot's part of the call, and its record, ended with the turn: these are its last words.
    if turn.action.type == "transfer":
        body = _voice().transfer(turn.reply, turn.action.to or cfg["TRANSFER_NUMBER"])
    else:
        body = _voice().hang_up(turn.reply)
    return with_llm_timing(_twiml(body), turn.llm_seconds)


class Silences(TypedDict):
    """How many silent ``<Gather>``s in a row, keyed by the turn that heard the last one."""

    n: int      # the turn whose <Gather> heard nothing
    count: int  # silent <Gather>s in a row


class GatherChannel(TypedDict, total=False):
    """What voicebot keeps of a Twilio call in the Gather loop, saved with its session."""

    silences: Silences


class GatherSpeaker(ResponseSpeaker):
    """The Gather loop's speaker: the reply goes back as TwiML, and a turn answered ends a run of silences."""

    def deliver(self, unsaid: str, call: CallContext) -> None:
        call.channel.pop("silences", None)


def _silence(call_id: str, n: int) -> Response:
    """The caller said nothing for a whole <Gather>: ask again, and after a few, say goodbye."""
    cfg = current_app.config
    conversation = _conversation()

    def count(saved: Channel) -> int:
        # Keyed by the turn's number, so Twilio sending this request again does not count twice.
        channel = cast(GatherChannel, saved)
        silences = channel.setdefault("silences", {"n": 0, "count": 0})
        if silences["n"] != n:
            silences["n"], silences["count"] = n, silences["count"] + 1
        return silences["count"]

    silences = conversation.with_channel(call_id, count, wait=2.0)
    if silences is None:  # not a call this service knows (expired, or ended)
        return _twiml(_voice().hang_up(""))
    if silences > cfg["TWILIO_MAX_SILENCES"]:
        conversation.end_call(call_id, reason="silence", deadline=Deadline(RESPONSE_BUDGET))
        return _twiml(_voice().hang_up(cfg["GOODBYE_LINE"]))
    return _twiml(_voice().listen(cfg["TWILIO_SILENCE_LINE"], _turn_url(n + 1)))


@bp.route("/status", methods=METHODS)
def status() -> Response:
    fields = _fields()
    call_id = _call_sid(fields)
    ended = how_it_ended(fields)
    if ended is not None:
        _conversation().end_call(call_id, reason=ended[0], details=ended[1], deadline=Deadline(RESPONSE_BUDGET))
    return _twiml(nothing())


# -- ConversationRelay (TWILIO_MODE=relay) ------------------------------------------------------

@bp.route("/relay", websocket=True)
def relay() -> Response:
    """One call's WebSocket, for its whole length.

    Before the upgrade: the signature (``check_signature``) proves the
    handshake is Twilio's, over a URL that names the call and its ticket;
    the ticket, taken under the call's lock, proves it is this call's first
    socket (a replayed handshake finds it held, or the call ended).
    """
    return open_socket(_conversation(), CALL_SID)


@bp.route("/relay-end", methods=METHODS)
def relay_end() -> Response:
    """The <Connect action>: after the relay session's ``end``, what the call does next."""
    fields = _fields()
    _call_sid(fields)
    return _twiml(_voice().after_relay(fields.get("HandoffData"), current_app.config["TRANSFER_NUMBER"]))

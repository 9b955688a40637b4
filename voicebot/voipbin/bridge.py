"""VoIPBin's events, turned into the conversation core's calls and VoIPBin's REST requests.

VoIPBin does not read a reply from the webhook response: it sends every event
of the account to one URL, and the backend speaks by calling its REST API.

Which calls are voicebot's: incoming calls to ``VOIPBIN_NUMBERS``, and calls
handed to it by the ``fetch`` flow action (which opens their session). Every
other call, transcription and transcript of the account is acknowledged and
left alone, logged at DEBUG only.

Per call: on ``call_progressing`` set up, step by step, a speaking session
and the greeting (one REST round trip before the caller hears it), then a
transcription of the caller; on each ``transcript_created``
from the caller take a turn and ``say`` the reply; on ``call_hangup`` stop
what runs and end the session. VoIPBin retries on 5xx, on no answer within
15 s, and delivers concurrently, so every step is idempotent: set-up records
each step as it completes and adopts what VoIPBin already has (after a 409,
a duplicate-session 500 or an answer that never came), and a reply that may
have reached VoIPBin is never said again.
"""

from __future__ import annotations

import enum
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

from ..conversation import Conversation
from ..deadline import Deadline
from ..exceptions import InvalidEvent
from ..session import CallContext, Channel
from ..turn import Outcome
from ..web.validation import identifier, optional_text
from .channel import VoipbinChannel, voipbin_channel
from .client import VoipbinClient
from .exceptions import VoipbinError, VoipbinRejected, VoipbinUnavailable
from .settings import VoipbinSettings, normalize_number
from .speaker import Step, VoipbinSpeaker, VoipbinSpeech, adopt_if_done, barge_in_marker, quietly

log = logging.getLogger(__name__)

# A SIP caller is "user@domain" and can be long; kept whole up to this.
MAX_CALLER_CHARS = 256


class EventStatus(str, enum.Enum):
    """What voicebot did with one VoIPBin event: the ``status`` of its answer (VoIPBin reads only the code)."""

    IGNORED = "ignored"                      # not voicebot's call, or nothing to do
    NOT_SET_UP = "not_set_up"                # answered, but its transcription could not be started
    ANSWERED = "answered"
    ENDED = "ended"
    RECORDED = "recorded"                    # a transcribe linked to its call
    STOPPED_EXTRA = "stopped_extra"          # a second transcribe on one call, stopped
    SAID = "said"
    SAID_NOT_RECORDED = "said_not_recorded"  # the caller heard it; the store did not keep the turn
    NOT_SAID = "not_said"                    # VoIPBin refused the speech (the call is gone)
    DUPLICATE = "duplicate"
    NOT_SPEAKING = "not_speaking"            # barge-in when the bot had stopped talking already
    FLUSHED = "flushed"
    NOT_FLUSHED = "not_flushed"


@dataclass(frozen=True)
class EventResult:
    """An event's status, and for a turn how long the model took (for Server-Timing)."""

    status: EventStatus
    llm_seconds: float = 0.0
    first_sentence_seconds: float | None = None  # streamed: from asking the model to its first sentence


def _transcribe_alias(transcribe_id: str) -> str:
    return f"voipbin:transcribe:{transcribe_id}"


class VoipbinBridge:
    """VoIPBin's events in, the conversation core's verbs and VoIPBin's REST requests out (see the module).

    The views hand it each verified event; it decides whether the call is
    voicebot's, keeps the call's VoIPBin state (transcription, speaking
    session, who runs the call's flow) in the session's channel
    (``VoipbinChannel``), and speaks through a ``VoipbinSpeaker``. Each step
    is idempotent, because VoIPBin redelivers.
    """

    def __init__(self, conversation: Conversation, client: VoipbinClient, settings: VoipbinSettings,
                 clock: Callable[[], float] = time.time) -> None:
        self.conversation = conversation
        self.client = client
        self.settings = settings
        self.speech = VoipbinSpeech(client, settings, clock)
        self._handlers: dict[str, Callable[[dict[str, Any], Deadline], "EventStatus | EventResult"]] = {
            "call_progressing": self.call_answered,
            "transcribe_created": self.transcribe_created,
            "transcript_created": self.transcript,
            "transcribe_speech_started": self.caller_started_talking,
            "call_hangup": self.call_hung_up,
        }

    def handle(self, event_type: str, data: dict[str, Any], deadline: Deadline) -> EventResult:
        """Handle one event."""
        handler = self._handlers.get(event_type)
        if handler is None:
            # Answering 4xx or 5xx would only make VoIPBin log or retry.
            return EventResult(EventStatus.IGNORED)
        result = handler(data, deadline)
        return result if isinstance(result, EventResult) else EventResult(result)

    def _speaker(self, call_id: str, deadline: Deadline) -> VoipbinSpeaker:
        return VoipbinSpeaker(self.speech, self.conversation, call_id, deadline,
                              streams=self.settings.stream_replies, barge_in=self.settings.barge_in)

    def _channel(self, call_id: str) -> VoipbinChannel | None:
        channel = self.conversation.channel(call_id)
        return None if channel is None else voipbin_channel(channel)

    # -- whose call is it --------------------------------------------------------

    def _owned(self, data: dict[str, Any], call_id: str) -> bool:
        """An incoming call to one of our numbers, or a call our fetch endpoint took (it has a session)."""
        destination = data.get("destination")
        target = destination.get("target") if isinstance(destination, dict) else None
        if (data.get("direction") == "incoming" and isinstance(target, str)
                and normalize_number(target) in self.settings.numbers):
            return True
        return self.conversation.channel(call_id) is not None

    # -- call life --------------------------------------------------------------

    def call_answered(self, data: dict[str, Any], deadline: Deadline) -> EventStatus:
        call_id = identifier(data, "id")
        if not self._owned(data, call_id):
            log.debug("call_progressing of a call that is not voicebot's call_id=%s", call_id)
            return EventStatus.IGNORED

        def set_up(call: CallContext) -> None:
            channel = voipbin_channel(call.channel)
            channel["answered"] = True
            number = _target(data.get("destination"))
            if number:
                channel.setdefault("number", number)  # the caller id for a transfer's outgoing leg
            # The greeting needs only the speaking: one REST round trip before the caller hears it.
            self.speech.ensure_speaking(call_id, channel, call.step, deadline)

        def listen(call: CallContext) -> None:
            self._ensure_transcribe(call_id, voipbin_channel(call.channel), call.step, deadline)

        try:
            started = self.conversation.start_call(call_id, _caller(data), called=_target(data.get("destination")),
                                                   attach=set_up,
                                                   speaker=self._speaker(call_id, deadline), greet=True,
                                                   deadline=deadline)
            # Listening starts while the greeting plays (a caller listens to it first); a redelivered
            # call_progressing greets no more, and starts what is still missing.
            if started is not None:
                self.conversation.with_call(call_id, listen, wait=deadline.cap(2.0))
        except VoipbinRejected as exc:
            # Asking again will be refused the same way (the call has gone, a wrong key).
            log.error("call not set up call_id=%s: %s", call_id, exc)
            return EventStatus.NOT_SET_UP
        return EventStatus.ANSWERED if started is not None else EventStatus.IGNORED

    def call_hung_up(self, data: dict[str, Any], deadline: Deadline) -> EventStatus:
        call_id = identifier(data, "id")
        if not self._owned(data, call_id):
            log.debug("call_hangup of a call that is not voicebot's call_id=%s", call_id)
            return EventStatus.IGNORED
        log.info("call hung up call_id=%s hangup_by=%s hangup_reason=%s", call_id,
                 _word(data.get("hangup_by")), _word(data.get("hangup_reason")))

        def detach(channel: Channel) -> None:
            # VoIPBin ends them with the call too; asking makes sure, and costs nothing twice.
            self.speech.stop_listening_and_speaking(call_id, voipbin_channel(channel), deadline)

        channel = self._channel(call_id) or {}
        bot_ended = channel.get("hanging_up") or channel.get("transferred_to")
        why = _word(data.get("hangup_reason"))
        details = {"hangup_by": _word(data.get("hangup_by")), "hangup_reason": why}
        # A call voicebot placed that reached no one ends for a reason of its own (busy, no answer, a machine).
        reason = "bot_ended" if bot_ended else UNANSWERED.get(why, "hung_up") if _never_answered(data) else "hung_up"
        self.conversation.end_call(call_id, reason=reason, details=details, detach=detach, deadline=deadline)
        return EventStatus.ENDED

    def flow_actions(self, call_id: str, loop_url: str, deadline: Deadline) -> list[dict[str, Any]]:
        """The answer to the ``fetch`` flow action: the call is voicebot's, and stays up.

        The first fetch of a call opens its session (so the ``call_progressing``
        that follows is taken as voicebot's) and answers it. Every answer ends
        with ``sleep`` then ``fetch`` again: VoIPBin hangs up a call whose flow
        runs out of actions, and each fetch is the moment the bot can push
        new actions into the call (queued with ``queue_actions``).
        """
        loop = [{"type": "sleep", "option": {"duration": int(self.settings.fetch_interval * 1000)}},
                {"type": "fetch", "option": {"event_url": loop_url, "event_method": "POST"}}]
        if self.conversation.ended(call_id):
            return []  # the call has hung up: nothing more to run
        channel = self._channel(call_id)
        if channel is None:
            def handed_over(call: CallContext) -> None:
                voipbin_channel(call.channel)["by_fetch"] = True

            self.conversation.start_call(call_id, attach=handed_over, greet=False, deadline=deadline)
            log.info("call handed over by fetch call_id=%s", call_id)
            return [{"type": "answer"}, *loop]
        self._keep_alive(call_id, channel)
        if channel.get("actions"):
            queued = self.conversation.with_channel(call_id, lambda ch: voipbin_channel(ch).pop("actions", []),
                                                    wait=deadline.cap(1.0)) or []
            if any(a.get("type") == "connect" for a in queued):
                # The caller goes to a person: the bot's part of the call, and its record, end here.
                self.conversation.end_call(call_id, reason="transferred", deadline=deadline,
                                           details={"transferred_to": channel.get("transferred_to", "")})
                return queued
            if any(a.get("type") == "hangup" for a in queued):
                return queued
            return [*queued, *loop]
        return loop

    def queue_actions(self, call_id: str, actions: list[dict[str, Any]], *, wait: float) -> bool:
        """Flow actions for the call's next fetch (a hand-off, a hang-up); False for a call not known."""
        def queue(channel: Channel) -> bool:
            voipbin_channel(channel).setdefault("actions", []).extend(actions)
            return True

        return bool(self.conversation.with_channel(call_id, queue, wait=wait))

    def _keep_alive(self, call_id: str, channel: VoipbinChannel) -> None:
        """A call can last hours with long silences: its session and transcribe link stay while it is up."""
        self.conversation.keep_alive(call_id)
        transcribe_id = channel.get("transcribe_id")
        if transcribe_id:
            self.conversation.recall(_transcribe_alias(transcribe_id), refresh=True)

    # -- transcription ----------------------------------------------------------

    def transcribe_created(self, data: dict[str, Any], deadline: Deadline) -> EventStatus:
        """Learn which call a transcribe belongs to: ours is linked, an extra one on our call is stopped."""
        if data.get("reference_type") != "call":
            return EventStatus.IGNORED
        transcribe_id = identifier(data, "id")
        call_id = identifier(data, "reference_id")
        channel = self._channel(call_id)
        if channel is None:
            log.debug("transcribe_created on a call that is not voicebot's transcribe_id=%s", transcribe_id)
            return EventStatus.IGNORED
        if channel.get("transcribe_id") == transcribe_id:
            self._link(transcribe_id, call_id)
            return EventStatus.RECORDED

        def adopt_or_stop(saved: Channel) -> EventStatus:
            channel = voipbin_channel(saved)
            if not channel.get("transcribe_id"):
                # Our POST /transcribes lost its answer: this is its transcribe.
                channel["transcribe_id"] = transcribe_id
                self._link(transcribe_id, call_id)
                return EventStatus.RECORDED
            if channel["transcribe_id"] == transcribe_id:
                return EventStatus.RECORDED
            log.warning("a second transcribe on call_id=%s: stopping %s", call_id, transcribe_id)
            quietly(lambda: self.client.stop_transcribe(transcribe_id, deadline=deadline), call_id)
            return EventStatus.STOPPED_EXTRA

        return self.conversation.with_channel(call_id, adopt_or_stop, wait=deadline.cap(5.0)) or EventStatus.IGNORED

    def transcript(self, data: dict[str, Any], deadline: Deadline) -> EventStatus | EventResult:
        if data.get("direction") != "in":
            return EventStatus.IGNORED  # the bot's own speech, heard back: answering it talks to itself
        event_id = identifier(data, "id")
        transcribe_id = identifier(data, "transcribe_id")
        call_id = self._call_of(transcribe_id)
        if call_id is None:
            log.debug("transcript of a transcribe that is not voicebot's transcribe_id=%s", transcribe_id)
            return EventStatus.IGNORED
        text = _transcript_text(data, self.settings.max_transcript_chars)
        if text is None:
            return EventStatus.IGNORED
        channel = self._channel(call_id) or {}
        if channel.get("transferred_to") or channel.get("hanging_up"):
            return EventStatus.IGNORED  # the bot's part of this call is over
        try:
            turn = self.conversation.take_turn(call_id, text, event_id=event_id,
                                               speaker=self._speaker(call_id, deadline), deadline=deadline)
        except VoipbinRejected as exc:
            # Asking again would be refused the same way (the call is gone, say);
            # the turn was not recorded.
            log.error("reply not said call_id=%s: %s", call_id, exc)
            return EventStatus.NOT_SAID
        if turn.outcome is Outcome.CALL_ENDED:
            return EventStatus.IGNORED
        if turn.outcome is Outcome.DUPLICATE:
            return EventResult(EventStatus.DUPLICATE)
        return EventResult(EventStatus.SAID if turn.saved else EventStatus.SAID_NOT_RECORDED, turn.llm_seconds,
                           turn.first_sentence_seconds)

    def caller_started_talking(self, data: dict[str, Any], deadline: Deadline) -> EventStatus:
        """Barge-in: the caller talks over the bot, so drop what it still had to say."""
        if not self.settings.barge_in or data.get("direction") != "in":
            return EventStatus.IGNORED
        call_id = self._call_of(identifier(data, "transcribe_id"))
        channel = self._channel(call_id) if call_id else None
        speaking_id = channel.get("speaking_id") if channel else None
        if not call_id or not channel or not speaking_id:
            return EventStatus.IGNORED
        event_id = data.get("id")
        if isinstance(event_id, str) and event_id and not self.conversation.mark_event(call_id, event_id):
            return EventStatus.DUPLICATE
        # A reply still being streamed stops at its next sentence (the turn flushes then).
        self.conversation.remember(barge_in_marker(call_id), repr(time.time()))
        if channel.get("speaking_until", 0) <= self.speech.clock():
            return EventStatus.NOT_SPEAKING
        try:
            self.client.flush(speaking_id, deadline=deadline)
        except VoipbinError as exc:
            # Too late to matter by the time a retry came: log and move on.
            log.warning("barge-in flush failed call_id=%s: %s", call_id, exc)
            return EventStatus.NOT_FLUSHED
        log.info("barge-in call_id=%s: flushed", call_id)
        return EventStatus.FLUSHED

    # -- set-up steps, each idempotent ---------------------------------------------

    def _ensure_transcribe(self, call_id: str, channel: VoipbinChannel, step: Step, deadline: Deadline) -> None:
        if channel.get("transcribe_id"):
            return
        step()

        def start() -> str:
            try:
                return self.client.start_transcribe(call_id, self.settings.language, deadline=deadline)
            except VoipbinRejected as exc:
                if exc.status != 409:
                    raise
                # TRANSCRIBE_ALREADY_PROGRESSING: an earlier attempt's transcribe finished after all.
                step()
                listed = self._find_transcribe(call_id, deadline)
                if listed is None:
                    raise VoipbinUnavailable(f"{exc}; and none is listed yet") from None
                return listed

        transcribe_id = adopt_if_done(start, lambda: self._find_transcribe(call_id, deadline), step)
        channel["transcribe_id"] = transcribe_id
        self._link(transcribe_id, call_id)
        step()

    def _find_transcribe(self, call_id: str, deadline: Deadline) -> str | None:
        """The call's progressing transcribe in our language; extra ones are stopped."""
        live = [t for t in self.client.transcribes_of(call_id, deadline=deadline)
                if t.get("status") == "progressing" and t.get("language") in (None, self.settings.language)
                and isinstance(t.get("id"), str)]
        live.sort(key=lambda t: str(t.get("tm_create", "")))
        for extra in live[1:]:
            extra_id = str(extra["id"])
            quietly(lambda: self.client.stop_transcribe(extra_id, deadline=deadline), call_id)
        return str(live[0]["id"]) if live else None

    # -- helpers ------------------------------------------------------------------

    def _link(self, transcribe_id: str, call_id: str) -> None:
        self.conversation.remember(_transcribe_alias(transcribe_id), call_id)

    def _call_of(self, transcribe_id: str) -> str | None:
        # Each use restarts the link's TTL: a long call keeps it.
        return self.conversation.recall(_transcribe_alias(transcribe_id), refresh=True)


# hangup_reason of an outgoing call that was not answered by a person, as end reasons.
UNANSWERED = {"busy": "busy", "noanswer": "no_answer", "timeout": "no_answer", "failed": "failed",
              "dialout": "failed", "cancel": "cancelled", "amd": "voicemail"}


def _never_answered(data: dict[str, Any]) -> bool:
    """An outgoing call that hung up before a person spoke: not answered, or answered by a machine."""
    return data.get("direction") == "outgoing" and (data.get("hangup_reason") == "amd"
                                                    or not data.get("tm_progressing"))


def _target(address: object) -> str | None:
    target = address.get("target") if isinstance(address, dict) else None
    if not isinstance(target, str) or not target.strip():
        return None
    return _printable(target.strip())[:MAX_CALLER_CHARS]


def _caller(data: dict[str, Any]) -> str | None:
    return _target(data.get("source"))


def _transcript_text(data: dict[str, Any], max_chars: int) -> str | None:
    """What the caller said; a very long utterance is cut rather than refused (VoIPBin would not resend it)."""
    message = data.get("message")
    if message is None or message == "":
        return None
    if not isinstance(message, str):
        raise InvalidEvent("'message' must be a string")
    text = _printable(message).strip()
    if not text:
        return None
    return optional_text({"message": text[:max_chars]}, "message", max_chars)


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else " " for c in text)


def _word(value: object) -> str:
    return value if isinstance(value, str) and value.isidentifier() else "-"

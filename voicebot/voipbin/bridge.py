"""VoIPBin's events, turned into the conversation core's calls and VoIPBin's REST requests.

VoIPBin does not read a reply from the webhook response: it sends every event
of the customer to one URL, and the backend speaks by calling its REST API.
Per call: on ``call_progressing`` open the session, start transcribing the
caller and a speaking session, say the greeting; on each ``transcript_created``
from the caller take a turn and ``say`` the reply; on ``call_hangup`` stop
what runs and end the session. VoIPBin retries on 5xx and delivers
concurrently, so handlers are idempotent: redelivered transcripts are known
by their id, set-up by what the call's channel already holds.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ..conversation import Conversation
from ..exceptions import NotYetKnown, VoipbinError, VoipbinRejected
from ..validation import identifier, optional_text
from .client import VoipbinClient

log = logging.getLogger(__name__)

# How fast TTS speaks, to tell whether the bot is still talking when the
# caller starts to (no "speaking finished" event reaches the webhook).
SPEECH_CHARS_PER_SECOND = 15.0


@dataclass(frozen=True)
class Outcome:
    status: str  # a word for the response body
    llm_seconds: float = 0.0


@dataclass(frozen=True)
class VoipbinSettings:
    language: str
    tts_provider: str
    voice_id: str
    barge_in: bool
    max_transcript_chars: int

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "VoipbinSettings":
        return cls(
            language=config["VOIPBIN_LANGUAGE"],
            tts_provider=config["VOIPBIN_TTS_PROVIDER"],
            voice_id=config["VOIPBIN_VOICE_ID"],
            barge_in=config["VOIPBIN_BARGE_IN"],
            max_transcript_chars=config["MAX_TRANSCRIPT_CHARS"],
        )


def _transcribe_alias(transcribe_id: str) -> str:
    return f"voipbin:transcribe:{transcribe_id}"


class VoipbinBridge:
    def __init__(self, conversation: Conversation, client: VoipbinClient, settings: VoipbinSettings,
                 clock: Callable[[], float] = time.time) -> None:
        self.conversation = conversation
        self.client = client
        self.settings = settings
        self.clock = clock
        self._handlers: dict[str, Callable[[dict], str | Outcome]] = {
            "call_progressing": self.call_answered,
            "transcribe_created": self.transcribe_created,
            "transcript_created": self.transcript,
            "transcribe_speech_started": self.caller_started_talking,
            "call_hangup": self.call_hung_up,
        }

    def handle(self, event_type: str, data: dict) -> Outcome:
        """Handle one event."""
        handler = self._handlers.get(event_type)
        if handler is None:
            # Answering 4xx or 5xx would only make VoIPBin log or retry.
            return Outcome("ignored")
        outcome = handler(data)
        return outcome if isinstance(outcome, Outcome) else Outcome(outcome)

    # -- call life --------------------------------------------------------------

    def call_answered(self, data: dict) -> str:
        call_id = identifier(data, "id")
        source = data.get("source")
        caller = optional_text(source, "target", 64) if isinstance(source, dict) else None
        greeting = self.conversation.settings.greeting

        def attach(channel: dict) -> None:
            if channel.get("speaking_id"):
                return  # set up by an earlier delivery of this event
            started: list[Callable[[], None]] = []
            try:
                speaking_id = self._open_speaking(call_id, channel)
                started.append(lambda: self.client.stop_speaking(speaking_id))
                if channel.get("flow_managed"):
                    return  # the flow (see flow_actions) greets and transcribes
                transcribe_id = self.client.start_transcribe(call_id, self.settings.language)
                started.append(lambda: self.client.stop_transcribe(transcribe_id))
                channel["transcribe_id"] = transcribe_id
                self.conversation.store.set_alias(_transcribe_alias(transcribe_id), call_id)
                self._say(speaking_id, greeting, channel)
            except Exception:
                # The event will be retried (or the call is gone): leave nothing running.
                for undo in started:
                    _quietly(undo, call_id)
                raise

        if self.conversation.start_call(call_id, caller, attach=attach) is None:
            return "ignored"
        return "answered"

    def call_hung_up(self, data: dict) -> str:
        call_id = identifier(data, "id")

        def detach(channel: dict) -> None:
            if channel.get("transcribe_id"):
                _quietly(lambda: self.client.stop_transcribe(channel["transcribe_id"]), call_id)
            if channel.get("speaking_id"):
                _quietly(lambda: self.client.stop_speaking(channel["speaking_id"]), call_id)

        self.conversation.end_call(call_id, detach=detach, final=True)
        return "ended"

    def flow_actions(self, call_id: str) -> list[dict]:
        """For the ``fetch`` flow action: answer, greet and transcribe through the flow itself."""
        managed_here = []

        def attach(channel: dict) -> None:
            if channel.get("transcribe_id"):
                managed_here.append(True)  # call_progressing came first and set everything up
            else:
                channel["flow_managed"] = True

        greeting = self.conversation.start_call(call_id, attach=attach)
        if greeting is None or managed_here:
            return []
        language = self.settings.language
        return [
            {"type": "answer"},
            {"type": "talk", "option": {"text": greeting, "language": language}},
            {"type": "transcribe_start", "option": {"language": language, "direction": "in"}},
        ]

    # -- transcription ----------------------------------------------------------

    def transcribe_created(self, data: dict) -> str:
        """Learn which call a transcribe belongs to, also for ones a flow started."""
        if data.get("reference_type") != "call":
            return "ignored"
        transcribe_id = identifier(data, "id")
        call_id = identifier(data, "reference_id")
        self.conversation.store.set_alias(_transcribe_alias(transcribe_id), call_id)
        return "recorded"

    def transcript(self, data: dict) -> str | Outcome:
        if data.get("direction") != "in":
            return "ignored"  # the bot's own speech, heard back: answering it talks to itself
        event_id = identifier(data, "id")
        transcribe_id = identifier(data, "transcribe_id")
        text = optional_text(data, "message", self.settings.max_transcript_chars)
        if text is None:
            return "ignored"
        call_id = self._call_of(transcribe_id)
        if call_id is None:
            raise NotYetKnown(f"transcribe {transcribe_id} is not linked to a call (yet)")

        def deliver(reply: str, channel: dict) -> None:
            speaking_id = channel.get("speaking_id") or self._open_speaking(call_id, channel)
            self._say(speaking_id, reply, channel)

        try:
            turn = self.conversation.take_turn(call_id, text, event_id=event_id, deliver=deliver)
        except VoipbinRejected as exc:
            # Retrying would be refused the same way (the call is gone, say);
            # the turn was not recorded.
            log.error("reply not said call_id=%s: %s", call_id, exc)
            return "not_said"
        if turn is None:
            return "ignored"
        return Outcome("duplicate" if turn.duplicate else "said", turn.llm_seconds)

    def caller_started_talking(self, data: dict) -> str:
        """Barge-in: the caller talks over the bot, so drop what it still had to say."""
        if not self.settings.barge_in or data.get("direction") != "in":
            return "ignored"
        call_id = self._call_of(identifier(data, "transcribe_id"))
        channel = self.conversation.channel(call_id) if call_id else None
        if not channel or not channel.get("speaking_id"):
            return "ignored"
        if channel.get("speaking_until", 0) <= self.clock():
            return "not_speaking"
        try:
            self.client.flush(channel["speaking_id"])
        except VoipbinError as exc:
            # Too late to matter by the time a retry came: log and move on.
            log.warning("barge-in flush failed call_id=%s: %s", call_id, exc)
            return "not_flushed"
        log.info("barge-in call_id=%s: flushed", call_id)
        return "flushed"

    # -- helpers ------------------------------------------------------------------

    def _call_of(self, transcribe_id: str) -> str | None:
        return self.conversation.store.get_alias(_transcribe_alias(transcribe_id))

    def _open_speaking(self, call_id: str, channel: dict) -> str:
        channel["speaking_id"] = self.client.start_speaking(
            call_id, self.settings.language, self.settings.tts_provider, self.settings.voice_id)
        return channel["speaking_id"]

    def _say(self, speaking_id: str, text: str, channel: dict) -> None:
        self.client.say(speaking_id, text)
        # Queued speech plays after what is still playing.
        starts = max(self.clock(), channel.get("speaking_until", 0))
        channel["speaking_until"] = starts + len(text) / SPEECH_CHARS_PER_SECOND


def _quietly(action: Callable[[], None], call_id: str) -> None:
    """Clean-up that may fail: VoIPBin ends a call's transcribe and speaking with the call anyway."""
    try:
        action()
    except VoipbinError as exc:
        log.warning("clean-up failed call_id=%s: %s", call_id, exc)


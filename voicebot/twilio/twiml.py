"""The TwiML voicebot answers with, written with Twilio's own VoiceResponse."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping

from twilio.twiml.voice_response import VoiceResponse  # type: ignore[import-untyped]


@dataclass(frozen=True)
class Voice:
    """How the bot sounds and listens, from the settings."""

    voice: str
    language: str

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "Voice":
        return cls(config["TWILIO_VOICE"], config["TWILIO_LANGUAGE"])

    def _say(self, parent: Any, text: str) -> None:
        parent.say(text, voice=self.voice or None, language=self.language or None)

    def listen(self, text: str, action: str) -> str:
        """Say ``text`` and listen: the words are inside <Gather>, so the caller can talk over them.

        ``actionOnEmptyResult`` posts to ``action`` after a silence too, so
        the bot decides what a silence means instead of Twilio ending the call.
        """
        response = VoiceResponse()
        gather = response.gather(input="speech", action=action, method="POST", speech_timeout="auto",
                                 language=self.language or None, action_on_empty_result=True)
        if text:
            self._say(gather, text)
        return str(response)

    def hang_up(self, text: str) -> str:
        response = VoiceResponse()
        if text:
            self._say(response, text)
        response.hangup()
        return str(response)

    def transfer(self, text: str, number: str) -> str:
        response = VoiceResponse()
        if text:
            self._say(response, text)
        response.dial(number)
        return str(response)

    def relay(self, greeting: str, url: str, action: str, *, voice: str = "", tts_provider: str = "",
              transcription_provider: str = "") -> str:
        """<Connect action><ConversationRelay>: Twilio says ``greeting``, then relays the call over the
        WebSocket at ``url``; the caller may talk over the bot (``interruptible="speech"``) and press keys."""
        response = VoiceResponse()
        connect = response.connect(action=action, method="POST")
        connect.conversation_relay(url=url, welcome_greeting=greeting or None, language=self.language or None,
                                   voice=voice or None, tts_provider=tts_provider or None,
                                   transcription_provider=transcription_provider or None,
                                   interruptible="speech", dtmf_detection=True,
                                   # A socket closed by a deploy or a lost instance is opened again, its events
                                   # kept meanwhile: the call goes on, on another worker, from its session.
                                   application_reconnect=True)
        return str(response)

    def after_relay(self, handoff_data: str | None, transfer_number: str) -> str:
        """The <Connect action>'s answer, once the relay session sent ``end``: its handoff data says a hand-off
        (``{"reason": "transfer", "to"}``: a <Dial>) or anything else (a hang-up)."""
        try:
            handoff = json.loads(handoff_data or "{}")
        except ValueError:
            handoff = {}
        if isinstance(handoff, dict) and handoff.get("reason") == "transfer":
            return self.transfer("", str(handoff.get("to") or transfer_number))
        return self.hang_up("")

    def reject_busy(self) -> str:
        """A new call this instance cannot take: the caller hears busy, and the call is not answered (or billed)."""
        response = VoiceResponse()
        response.reject(reason="busy")
        return str(response)


# What a status callback's CallStatus says about how the call ended (Twilio's, and Telnyx's TeXML: the same).
END_REASONS = {"completed": "ended", "busy": "busy", "no-answer": "no_answer", "canceled": "canceled",
               "failed": "failed"}


def how_it_ended(fields: Mapping[str, str]) -> tuple[str, dict[str, Any] | None] | None:
    """A status callback's end reason and details (its duration), or None while the call goes on."""
    reason = END_REASONS.get(fields.get("CallStatus", ""))
    if reason is None:
        return None
    duration = fields.get("CallDuration", "")
    return reason, ({"duration_seconds": int(duration)} if duration.isdigit() else None)


def nothing() -> str:
    return str(VoiceResponse())

"""VoIPBin's settings, added to the one registry (and the README's table) by ``voicebot.platforms``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from ..config import Setting, comma_list, credential, flag, http_url, positive_float, text
from ..deadline import RESPONSE_BUDGET
from ..exceptions import ConfigError

SETTINGS: tuple[Setting, ...] = (
    Setting("VOIPBIN_WEBHOOK_SECRET", "", text,
            "The customer's `webhook_secret`: every VoIPBin event must carry its signature "
            "(401 otherwise). Unset: `/webhook/voipbin` stays off unless VOIPBIN_ALLOW_UNSIGNED=1.",
            secret=True),
    Setting("VOIPBIN_ALLOW_UNSIGNED", False, flag,
            "1: accept unsigned VoIPBin events (local trials only)."),
    Setting("VOIPBIN_ACCESS_KEY", "", credential,
            "VoIPBin access key for its REST API (speech out). `/webhook/voipbin` stays off without it.",
            secret=True),
    Setting("VOIPBIN_NUMBERS", (), comma_list,
            "Comma-separated numbers whose incoming calls the bot answers (matched against the call's "
            "`destination.target`). Calls handed over by `/webhook/voipbin/fetch` are answered too; "
            "every other call of the account is left alone."),
    Setting("VOIPBIN_FETCH_TOKEN", "", text,
            "Secret in the URL of VoIPBin's `fetch` flow action (`/webhook/voipbin/fetch?token=...`). "
            "Unset: that endpoint is off.",
            secret=True),
    Setting("VOIPBIN_FETCH_INTERVAL_SECONDS", 10.0, positive_float,
            "How often a call handed over by `fetch` asks voicebot for its next flow actions "
            "(each answer ends with `sleep` and `fetch` again, which keeps the call up)."),
    Setting("VOIPBIN_API_URL", "https://api.voipbin.net/v1.0", http_url, "VoIPBin REST API base URL."),
    Setting("VOIPBIN_LANGUAGE", "en-US", text, "Language of transcription and speech."),
    Setting("VOIPBIN_TTS_PROVIDER", "", text,
            "Text-to-speech provider of the speaking session (e.g. `elevenlabs`). Unset: VoIPBin's default."),
    Setting("VOIPBIN_VOICE_ID", "", text, "Voice of the speaking session. Unset: the provider's default."),
    Setting("VOIPBIN_BARGE_IN", True, flag,
            "1: when the caller starts talking over the bot, drop what it was still going to say."),
    Setting("VOIPBIN_STREAM_REPLIES", True, flag,
            "1: the model's reply is streamed and each sentence said as soon as it is written, so the caller "
            "hears the first one while the model writes the rest. 0: the whole reply is said at once."),
    Setting("VOIPBIN_TIMEOUT_SECONDS", 3.0, positive_float,
            "Read timeout of one VoIPBin REST call (connect: 1 s). With the model's deadline it must fit "
            "in the 13 s voicebot gives itself of the 15 s VoIPBin waits for an answer."),
)


def check(settings: Mapping[str, Any]) -> None:
    """A turn's model call and one REST call must fit in the webhook's budget."""
    llm = settings["LLM_TIMEOUT_SECONDS"]
    voipbin_turn = llm + 1.0 + settings["VOIPBIN_TIMEOUT_SECONDS"] + 1.0
    if settings["VOIPBIN_ACCESS_KEY"] and voipbin_turn > RESPONSE_BUDGET:
        raise ConfigError(
            f"LLM_TIMEOUT_SECONDS ({llm:g}) + VOIPBIN_TIMEOUT_SECONDS ({settings['VOIPBIN_TIMEOUT_SECONDS']:g}) "
            f"+ 2 s must be at most {RESPONSE_BUDGET:g} s: VoIPBin waits 15 s for an answer and sends the "
            "event again after that")


@dataclass(frozen=True)
class VoipbinSettings:
    """The VoIPBin settings a call's bridge and speaker use, read once from the app's config."""

    language: str
    tts_provider: str
    voice_id: str
    barge_in: bool
    max_transcript_chars: int
    numbers: frozenset[str]
    fetch_interval: float
    stream_replies: bool = True

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "VoipbinSettings":
        return cls(
            language=config["VOIPBIN_LANGUAGE"],
            tts_provider=config["VOIPBIN_TTS_PROVIDER"],
            voice_id=config["VOIPBIN_VOICE_ID"],
            barge_in=config["VOIPBIN_BARGE_IN"],
            max_transcript_chars=config["MAX_TRANSCRIPT_CHARS"],
            numbers=frozenset(normalize_number(n) for n in config["VOIPBIN_NUMBERS"]),
            fetch_interval=config["VOIPBIN_FETCH_INTERVAL_SECONDS"],
            stream_replies=config["VOIPBIN_STREAM_REPLIES"],
        )


def normalize_number(number: str) -> str:
    """'+1 (555) 123-4567' and '+15551234567' are one number; a SIP address is kept as it is."""
    return number.strip() if "@" in number else re.sub(r"[\s().-]", "", number)

"""Twilio's settings, added to the one registry (and the README's table) by ``voicebot.platforms``."""

from __future__ import annotations

from typing import Any, Mapping
from urllib.parse import urlsplit

from ..config import Setting, comma_list, http_url, positive_int, text
from ..exceptions import ConfigError

# How long a Twilio call that ended stays ended. Twilio's requests are signed but carry no time, so a
# captured one can be sent again at any moment; Twilio itself sends a call's requests only while the call
# lasts, and a call lasts at most 24 hours (the longest TimeLimit), so a day and an hour covers every
# request Twilio could still send (a late status callback included). A replay after it cannot make a
# second record either: Twilio's call ids are never reused, and the record's id is the call id's.
ENDED_CALLS_KEPT_SECONDS = 25 * 3600.0

SETTINGS: tuple[Setting, ...] = (
    Setting("TWILIO_AUTH_TOKEN", "", text,
            "The Twilio account's Auth Token: every request to `/webhook/twilio/*` must carry its "
            "`X-Twilio-Signature` (403 otherwise). Unset: those endpoints are off.",
            secret=True),
    Setting("TWILIO_ACCOUNT_SID", "", text,
            "The Twilio account's SID (`AC...`): with TWILIO_AUTH_TOKEN, voicebot places calls through Twilio's "
            "REST API (OUTBOUND_NUMBER). Unset: no calls are placed on Twilio."),
    Setting("TWILIO_API_URL", "https://api.twilio.com", http_url,
            "Twilio's REST API base URL (a local fake in tests and trials)."),
    Setting("PUBLIC_URL", "", http_url,
            "This service's address as Twilio calls it (`https://bot.example.com`): signatures are checked "
            "against it, and the TwiML's `action` URLs are built on it. Unset: the request's own URL "
            "(behind a proxy, list it in TRUSTED_PROXIES)."),
    Setting("TRUSTED_PROXIES", (), comma_list,
            "Comma-separated addresses of proxies in front of voicebot (nginx: `127.0.0.1`) whose "
            "`X-Forwarded-Proto`/`X-Forwarded-Host` are believed when PUBLIC_URL is unset; nobody else's are."),
    Setting("TWILIO_VOICE", "Polly.Joanna-Neural", text,
            "`<Say voice>`: any of Twilio's text-to-speech voices (`alice`, `Polly.*`, `Google.*`)."),
    Setting("TWILIO_LANGUAGE", "en-US", text,
            "Language of `<Say>` and of `<Gather>`'s speech recognition."),
    Setting("TWILIO_MODE", "gather", text,
            "`gather`: a `<Gather input=\"speech\">` loop, one request per turn. `relay`: ConversationRelay, one "
            "WebSocket per call: the reply is streamed as the model writes it, the caller can talk over the bot "
            "and press keys (needs PUBLIC_URL; Telnyx's TeXML relay speaks it too)."),
    Setting("TWILIO_RELAY_VOICE", "", text,
            "Relay mode: the text-to-speech voice (as ConversationRelay names them). Unset: Twilio's default."),
    Setting("TWILIO_RELAY_TTS_PROVIDER", "", text,
            "Relay mode: `ElevenLabs`, `Google` or `Amazon`. Unset: Twilio's default."),
    Setting("TWILIO_RELAY_TRANSCRIPTION_PROVIDER", "", text,
            "Relay mode: `Deepgram` or `Google`. Unset: Twilio's default."),
    Setting("TWILIO_SILENCE_LINE", "Are you still there?", text,
            "Said when the caller says nothing for a whole `<Gather>`."),
    Setting("TWILIO_MAX_SILENCES", 2, positive_int,
            "Silences in a row after which the bot says GOODBYE_LINE and hangs up."),
)


def check(settings: Mapping[str, Any]) -> None:
    mode = settings["TWILIO_MODE"]
    if mode not in ("gather", "relay"):
        raise ConfigError(f"TWILIO_MODE must be gather or relay; got {mode!r}")
    if mode == "relay" and settings["TWILIO_AUTH_TOKEN"] and not settings["PUBLIC_URL"]:
        raise ConfigError("TWILIO_MODE=relay needs PUBLIC_URL: ConversationRelay is told the wss:// URL to open")
    url = settings["PUBLIC_URL"]
    if url:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            raise ConfigError(f"PUBLIC_URL must be this service's base URL, such as https://bot.example.com; "
                              f"got {url!r}")

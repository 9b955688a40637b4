"""Telnyx's settings, added to the one registry (and the README's table) by ``voicebot.platforms``."""

from __future__ import annotations

import base64
import binascii
from typing import Any, Mapping

from ..config import Setting, text
from ..exceptions import ConfigError

SETTINGS: tuple[Setting, ...] = (
    Setting("TELNYX_PUBLIC_KEY", "", text,
            "The Telnyx account's public key (base64, Mission Control > Keys & Credentials > Public Key): every "
            "TeXML request to `/webhook/telnyx/*` must carry a good `telnyx-signature-ed25519` over its "
            "`telnyx-timestamp` (at most 5 minutes off) and body (403 otherwise). Unset: those endpoints are off."),
    Setting("TELNYX_VOICE", "", text,
            "Telnyx relay: the text-to-speech voice (`Telnyx.NaturalHD.astra`, `AWS.Polly.Joanna-Neural`). "
            "Unset: Telnyx's default."),
    Setting("TELNYX_LANGUAGE", "en", text,
            "Telnyx relay: the language of speech recognition and text-to-speech."),
    Setting("TELNYX_TRANSCRIPTION_PROVIDER", "", text,
            "Telnyx relay: the speech-to-text provider (`deepgram`, `google`, `telnyx`). Unset: Telnyx's default."),
)


def public_key_bytes(value: str) -> bytes:
    """The 32 bytes of an Ed25519 public key given in base64; ConfigError if it is not one."""
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise ConfigError("TELNYX_PUBLIC_KEY must be the account's Ed25519 public key in base64 (32 bytes), as "
                          "Mission Control shows it")
    return raw


def check(settings: Mapping[str, Any]) -> None:
    if settings["TELNYX_PUBLIC_KEY"]:
        public_key_bytes(settings["TELNYX_PUBLIC_KEY"])
        if not settings["PUBLIC_URL"]:
            raise ConfigError("TELNYX_PUBLIC_KEY needs PUBLIC_URL: Telnyx's relay is told the wss:// URL to open")

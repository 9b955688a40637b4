"""Telnyx: TeXML's ``<Connect><ConversationRelay>``, signed with Ed25519, the relay shared with Twilio's."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..platform import ConversationFactory, Platform
from . import settings

if TYPE_CHECKING:
    from flask import Flask

log = logging.getLogger(__name__)

NAME = "telnyx"


def init_app(app: "Flask", conversation_of: ConversationFactory) -> None:
    """Turn on /webhook/telnyx when TELNYX_PUBLIC_KEY is set (registered either way: off, it answers 404)."""
    from ..runtime import runtime_of
    from ..twilio.twiml import Voice
    from .signature import load_key
    from .views import bp

    cfg = app.config
    # Telnyx never reuses a call id: an ended call stays ended, and a replayed request is told so.
    conversation_of(ends_for_good=True)
    app.register_blueprint(bp)
    key = load_key(settings.public_key_bytes(cfg["TELNYX_PUBLIC_KEY"])) if cfg["TELNYX_PUBLIC_KEY"] else None
    runtime_of(app).platforms[NAME] = {"key": key, "voice": Voice(cfg["TELNYX_VOICE"], cfg["TELNYX_LANGUAGE"])}
    if key is None:
        log.info("/webhook/telnyx is off: set TELNYX_PUBLIC_KEY to the Telnyx account's public key")
    else:
        log.info("/webhook/telnyx is on: Ed25519 signatures checked; relay sockets at %s", cfg["PUBLIC_URL"])


PLATFORM = Platform(NAME, init_app, settings=settings.SETTINGS, check=settings.check)

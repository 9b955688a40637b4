"""Calls voicebot places: ``POST /calls`` (and ``voicebot call``) on VoIPBin or Twilio, each call's variables
in its conversation, its outcome in its record.

Each platform that can place calls registers its ``Dialler`` (``voicebot.speaker``)
in ``app.extensions["diallers"]``; this package adds the endpoint that uses them.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..platform import ConversationFactory, Platform
from . import settings

if TYPE_CHECKING:
    from flask import Flask

log = logging.getLogger(__name__)

NAME = "outbound"


def init_app(app: "Flask", conversation_of: ConversationFactory) -> None:
    from .views import bp

    app.register_blueprint(bp)
    diallers = app.extensions["diallers"]
    if diallers:
        log.info("POST /calls places calls from %s on %s", app.config["OUTBOUND_NUMBER"], ", ".join(sorted(diallers)))


PLATFORM = Platform(NAME, init_app, settings=settings.SETTINGS, check=settings.check)

"""Calls voicebot places: ``POST /calls`` (and ``voicebot call``) on VoIPBin or Twilio, each call's variables
in its conversation, its outcome in its record.

Each platform that can place calls registers its ``Dialler`` (``voicebot.speaker``)
in the runtime's ``diallers``; this package adds the endpoint that uses them.
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
    from ..runtime import runtime_of
    from .views import bp

    app.register_blueprint(bp)
    runtime = runtime_of(app)
    diallers = runtime.diallers
    if not diallers:
        return
    from . import campaign as steps
    from .book import build_book
    from .runner import CampaignRunner, outcome_listener

    book = runtime.platforms[NAME] = build_book(app.config)
    runtime.closers.append(book.close)
    # Every platform's calls end through its Conversation: a campaign call's outcome goes to its campaign.
    for conversation in runtime.conversations.values():
        conversation.end_listeners.append(outcome_listener(book))
    runtime.gauges.append(
        ("voicebot_outbound_live_calls", "Campaign calls being dialled or up now, across all instances",
         lambda: float(sum(steps.summary(book.get(i))["live"] for i in book.active()))))
    # Started in each worker after the fork (voicebot.background): any worker carries any campaign.
    runtime.workers.append(lambda: CampaignRunner(book, diallers))
    log.info("POST /calls and /campaigns place calls from %s on %s", app.config["OUTBOUND_NUMBER"],
             ", ".join(sorted(diallers)))


PLATFORM = Platform(NAME, init_app, settings=settings.SETTINGS, check=settings.check)

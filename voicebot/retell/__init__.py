"""Retell: voicebot as the custom LLM behind Retell's voice agents, over Retell's LLM WebSocket.

Retell owns the phone line, speech and turn-taking; for each call it opens ``/retell/{call_id}`` and asks,
on that socket, for each response. The socket is not signed: each is checked against Retell's API before
a word is said (``calls``). Retell's signed webhooks end the call (``views.webhook``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Mapping

from ..checks import Found
from ..platform import ConversationFactory, Platform
from . import settings

if TYPE_CHECKING:
    from flask import Flask

log = logging.getLogger(__name__)

NAME = "retell"


def init_app(app: "Flask", conversation_of: ConversationFactory) -> None:
    """Turn on /retell when RETELL_API_KEY is set (registered either way: off, it answers 404 with why)."""
    from ..runtime import runtime_of
    from .calls import RetellCalls
    from .views import bp

    # Retell never reuses a call id: an ended call stays ended, and a late socket or event is told so.
    conversation_of(ends_for_good=True)
    app.register_blueprint(bp)
    cfg = app.config
    if not cfg["RETELL_API_KEY"]:
        log.info("/retell is off: set RETELL_API_KEY to the Retell account's API key")
        return
    runtime = runtime_of(app)
    calls = runtime.platforms[NAME] = RetellCalls(cfg["RETELL_API_URL"], cfg["RETELL_API_KEY"])
    runtime.closers.append(calls.close)
    log.info("/retell is on: each socket's call is checked against %s", cfg["RETELL_API_URL"])


def reach(config: Mapping[str, Any]) -> Found | None:
    if not config["RETELL_API_KEY"]:
        return Found("Retell", None, "RETELL_API_KEY is not set: /retell is off")
    return None


def _gives_variables(config: Mapping[str, Any]) -> bool:
    return bool(config["RETELL_API_KEY"])  # each call's retell_llm_dynamic_variables


PLATFORM = Platform(NAME, init_app, settings=settings.SETTINGS, reach=reach, gives_variables=_gives_variables)

"""Twilio: a <Gather input="speech"> loop over signed, form-encoded webhooks."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Mapping

from ..checks import Found
from ..platform import ConversationFactory, Platform
from . import settings

if TYPE_CHECKING:
    from flask import Flask

    from ..conversation import Conversation

log = logging.getLogger(__name__)


NAME = "twilio"  # the platform's name: its namespace in the store, its records' "platform"


def init_app(app: "Flask", conversation_of: ConversationFactory) -> None:
    """Turn on /webhook/twilio/* when requests can be checked as Twilio's."""
    # Twilio's library is imported only when the platform is used.
    from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

    from ..runtime import runtime_of
    from .state import KEY, TwilioState
    from .twiml import Voice
    from .views import bp

    cfg = app.config
    conversation = conversation_of(ends_for_good=True, ended_calls_kept=settings.ENDED_CALLS_KEPT_SECONDS)
    state = runtime_of(app).platforms[KEY] = TwilioState(Voice.from_config(cfg))
    # Registered even when off: its endpoints answer 404 with the reason, not Flask's HTML.
    app.register_blueprint(bp)
    if not cfg["TWILIO_AUTH_TOKEN"]:
        state.disabled_because = "/webhook/twilio is off: set TWILIO_AUTH_TOKEN to the account's Auth Token"
        log.info(state.disabled_because)
        return
    state.validator = RequestValidator(cfg["TWILIO_AUTH_TOKEN"])
    where = cfg["PUBLIC_URL"] or "the URL each request arrives on (PUBLIC_URL is unset)"
    log.info("/webhook/twilio is on: signatures checked against %s", where)
    if cfg["OUTBOUND_NUMBER"] and cfg["PUBLIC_URL"] and cfg["TWILIO_ACCOUNT_SID"]:
        _register_dialler(app, conversation)


def _register_dialler(app: "Flask", conversation: "Conversation") -> None:
    """Calls placed through Twilio's REST API, by twilio-python (its errors, auth and form encoding are Twilio's),
    its requests made by voicebot's egress layer."""
    from twilio.rest import Client  # type: ignore[import-untyped]

    from ..runtime import runtime_of
    from .dialler import REQUEST_SECONDS, TwilioDialler
    from .egress_client import EgressHttpClient

    cfg = app.config
    runtime = runtime_of(app)
    http = EgressHttpClient(timeout=REQUEST_SECONDS)
    client = Client(cfg["TWILIO_ACCOUNT_SID"], cfg["TWILIO_AUTH_TOKEN"], http_client=http)
    client.api.base_url = cfg["TWILIO_API_URL"].rstrip("/")
    runtime.closers.append(http.close)
    runtime.diallers[NAME] = TwilioDialler(client, conversation, cfg["OUTBOUND_NUMBER"], cfg["PUBLIC_URL"],
                                           voicemail=bool(cfg["VOICEMAIL_MESSAGE"]))


def reach(config: Mapping[str, Any]) -> Found:
    """--check-config --connect: nothing Twilio can be asked yet, and why."""
    if not config["TWILIO_AUTH_TOKEN"]:
        return Found("Twilio", None, "TWILIO_AUTH_TOKEN is not set: /webhook/twilio is off")
    return Found("Twilio", None, "not checked: Twilio's REST API needs the account SID, which voicebot does not "
                                 "take; its signatures are checked on every request")


PLATFORM = Platform(NAME, init_app, settings=settings.SETTINGS, check=settings.check, reach=reach)

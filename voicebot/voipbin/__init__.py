"""Speaking the real VoIPBin platform: signed events in, speech out through its REST API."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Mapping

from ..checks import TIMEOUT_SECONDS, Found
from ..platform import ConversationFactory, Platform
from . import settings

if TYPE_CHECKING:
    from flask import Flask

log = logging.getLogger(__name__)


NAME = "voipbin"  # the platform's name: its namespace in the store, its records' "platform"


def init_app(app: "Flask", conversation_of: ConversationFactory) -> None:
    """Turn on /webhook/voipbin when it can be both trusted and useful."""
    from .views import bp

    cfg = app.config
    conversation = conversation_of(ends_for_good=True)
    # Registered even when off: its views answer 404 with the reason, not Flask's HTML.
    app.register_blueprint(bp)
    if not cfg["VOIPBIN_WEBHOOK_SECRET"] and not cfg["VOIPBIN_ALLOW_UNSIGNED"]:
        reason = ("/webhook/voipbin is off: set VOIPBIN_WEBHOOK_SECRET to your customer's webhook_secret "
                  "(or VOIPBIN_ALLOW_UNSIGNED=1 for a local trial)")
    elif not cfg["VOIPBIN_ACCESS_KEY"]:
        reason = "/webhook/voipbin is off: set VOIPBIN_ACCESS_KEY so that voicebot can speak into calls"
    else:
        reason = ""
    cfg["VOIPBIN_DISABLED_BECAUSE"] = reason
    if reason:
        # Half configured (one of the two set) is a mistake worth a WARNING; neither is a choice.
        half = bool(cfg["VOIPBIN_WEBHOOK_SECRET"] or cfg["VOIPBIN_ALLOW_UNSIGNED"]) != bool(cfg["VOIPBIN_ACCESS_KEY"])
        log.log(logging.WARNING if half else logging.INFO, reason)
        return
    from ..runtime import runtime_of
    from .bridge import VoipbinBridge
    from .settings import VoipbinSettings
    from .client import VoipbinClient

    # The settings check made sure the model's deadline and one REST call fit
    # in the webhook's budget (config.check).
    client = VoipbinClient(cfg["VOIPBIN_API_URL"], cfg["VOIPBIN_ACCESS_KEY"],
                           read_timeout=cfg["VOIPBIN_TIMEOUT_SECONDS"])
    bridge = VoipbinBridge(conversation, client, VoipbinSettings.from_config(cfg))
    runtime = runtime_of(app)
    runtime.platforms[NAME] = bridge
    runtime.closers.append(client.close)
    if not cfg["VOIPBIN_WEBHOOK_SECRET"]:
        log.warning("/webhook/voipbin accepts UNSIGNED events (VOIPBIN_ALLOW_UNSIGNED=1): "
                    "anyone who finds the URL can drive calls; for local trials only")
    numbers = ", ".join(sorted(bridge.settings.numbers)) or "no number (VOIPBIN_NUMBERS is empty)"
    fetch = ("and calls handed over by /webhook/voipbin/fetch" if cfg["VOIPBIN_FETCH_TOKEN"]
             else "and no call by fetch (VOIPBIN_FETCH_TOKEN is empty)")
    log.info("/webhook/voipbin is on, speaking through %s; answering incoming calls to %s, %s",
             cfg["VOIPBIN_API_URL"], numbers, fetch)
    if cfg["OUTBOUND_NUMBER"] and cfg["PUBLIC_URL"] and cfg["VOIPBIN_FETCH_TOKEN"]:
        from .dialler import VoipbinDialler

        fetch_url = f"{cfg['PUBLIC_URL'].rstrip('/')}/webhook/voipbin/fetch?token={cfg['VOIPBIN_FETCH_TOKEN']}"
        runtime.diallers[NAME] = VoipbinDialler(client, conversation, cfg["OUTBOUND_NUMBER"], fetch_url)
    if not bridge.settings.numbers and not cfg["VOIPBIN_FETCH_TOKEN"]:
        log.warning("/webhook/voipbin will answer no call: set VOIPBIN_NUMBERS or VOIPBIN_FETCH_TOKEN "
                    "(`voicebot voipbin setup` does both)")


def reach(settings: Mapping[str, Any]) -> Found:
    """--check-config --connect: the access key, on one page of one number."""
    if not settings["VOIPBIN_ACCESS_KEY"]:
        return Found("VoIPBin", None, "VOIPBIN_ACCESS_KEY is not set: nothing to reach")
    from .client import VoipbinClient
    from .exceptions import VoipbinError

    client = VoipbinClient(settings["VOIPBIN_API_URL"], settings["VOIPBIN_ACCESS_KEY"], read_timeout=TIMEOUT_SECONDS)
    try:
        client.request("GET", "/numbers", params={"page_size": 1})
    except VoipbinError as exc:
        return Found("VoIPBin", False, str(exc))
    finally:
        client.close()
    return Found("VoIPBin", True, "the access key is accepted")


PLATFORM = Platform(NAME, init_app, settings=settings.SETTINGS, check=settings.check, reach=reach)

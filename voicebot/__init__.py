"""voicebot: the HTTP backend behind an AI phone agent."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from flask import Flask

    from .conversation import Conversation

log = logging.getLogger(__name__)


def create_app(test_config: Mapping[str, Any] | None = None) -> "Flask":
    """Build the app from the environment, with ``test_config`` laid over it."""
    # Imported here, not at the top: gunicorn's master imports this package
    # for its settings, and must not load prometheus_client (or anything
    # else a worker builds) before the metrics directory is set.
    from flask import Flask

    from . import config
    from .conversation import Conversation, ConversationSettings
    from .llm import build_llm
    from .logs import configure_logging
    from .stores import build_store

    app = Flask(__name__)
    app.config.from_mapping(config.DEFAULTS)
    app.config.from_mapping(config.from_environ())
    if test_config is not None:
        app.config.from_mapping(test_config)
    app.config["MAX_CONTENT_LENGTH"] = app.config["MAX_BODY_BYTES"]
    app.json.compact = True  # type: ignore[attr-defined]
    configure_logging(app.config["LOG_LEVEL"])

    store = build_store(app.config)
    llm = build_llm(app.config)
    conversation = Conversation(store, llm, ConversationSettings.from_config(app.config))
    app.extensions["voicebot"] = conversation
    _announce(app, store, llm)
    _attach_voipbin(app, conversation)

    from . import errors, ops
    from .webhooks import seed, voipbin

    errors.register_error_handlers(app)
    app.register_blueprint(ops.bp)
    app.register_blueprint(seed.bp)
    app.register_blueprint(voipbin.bp)
    return app


def _attach_voipbin(app: "Flask", conversation: "Conversation") -> None:
    """Turn on /webhook/voipbin when it can be both trusted and useful."""
    cfg = app.config
    if not cfg["VOIPBIN_WEBHOOK_SECRET"] and not cfg["VOIPBIN_ALLOW_UNSIGNED"]:
        reason = ("/webhook/voipbin is off: set VOIPBIN_WEBHOOK_SECRET to your customer's webhook_secret "
                  "(or VOIPBIN_ALLOW_UNSIGNED=1 for a local trial)")
    elif not cfg["VOIPBIN_ACCESS_KEY"]:
        reason = "/webhook/voipbin is off: set VOIPBIN_ACCESS_KEY so that voicebot can speak into calls"
    else:
        reason = ""
    cfg["VOIPBIN_DISABLED_BECAUSE"] = reason
    if reason:
        log.info(reason)
        return
    if not cfg["VOIPBIN_WEBHOOK_SECRET"]:
        log.warning("/webhook/voipbin accepts UNSIGNED events (VOIPBIN_ALLOW_UNSIGNED=1): "
                    "anyone who finds the URL can drive calls; for local trials only")
    from .voipbin.bridge import VoipbinBridge, VoipbinSettings
    from .voipbin.client import VoipbinClient

    client = VoipbinClient(cfg["VOIPBIN_API_URL"], cfg["VOIPBIN_ACCESS_KEY"],
                           read_timeout=cfg["VOIPBIN_TIMEOUT_SECONDS"])
    app.extensions["voipbin"] = VoipbinBridge(conversation, client, VoipbinSettings.from_config(cfg))
    log.info("/webhook/voipbin is on, speaking through %s", cfg["VOIPBIN_API_URL"])


def _announce(app: "Flask", store, llm) -> None:
    """Say at start-up what this process will do, so a misconfiguration shows at once."""
    from .exceptions import StoreError

    if llm.name == "offline":
        log.warning("ANTHROPIC_API_KEY is not set: replies come from the OFFLINE responder, not a model")
    else:
        log.info("replies from %s model %s", llm.name, app.config["LLM_MODEL"])
    try:
        store.ping()
        log.info("session store: %s", type(store).__name__)
    except StoreError as exc:
        log.error("session store %s does not answer (%s); /readyz reports 503 until it does",
                  type(store).__name__, exc)

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
    app.config.from_mapping(config.load(overlay=test_config))
    app.config["MAX_CONTENT_LENGTH"] = app.config["MAX_BODY_BYTES"]
    app.json.compact = True  # type: ignore[attr-defined]
    configure_logging(app.config["LOG_LEVEL"])

    from .llm.health import LLMHealth, MonitoredLLM
    from .records import build_outbox

    store = build_store(app.config)
    records = build_outbox(app.config)
    app.extensions["records"] = records
    health = LLMHealth(store)
    llm = MonitoredLLM(build_llm(app.config), health)
    app.extensions["llm_health"] = health
    from .webhooks.admission import Admission, in_flight_limit

    app.extensions["admission"] = Admission(in_flight_limit(app.config["WEB_THREADS"]))
    from .operator_tools import ToolCaller, load_tools

    settings = ConversationSettings.from_config(app.config)
    cfg = app.config
    tools = load_tools(cfg["TOOLS_FILE"], allow_loopback=cfg["TOOLS_ALLOW_LOOPBACK"]) if cfg["TOOLS_FILE"] else []
    caller = ToolCaller(cfg["TOOLS_SECRET"], max_workers=cfg["WEB_THREADS"]) if tools else None
    app.extensions["tool_caller"] = caller

    def conversation(namespace: str) -> Conversation:
        # One namespace per contract: a call id sent to one can never reach a call of the other.
        return Conversation(store, llm, settings, namespace=namespace, records=records,
                            operator_tools=tools, tool_caller=caller)

    app.extensions["voicebot"] = conversation("article")
    _announce(app, store, llm)
    if tools:
        log.info("tools the model may use: %s", ", ".join(t.name for t in tools))
    _attach_voipbin(app, conversation("voipbin"))

    from . import errors, ops, talk
    from .webhooks import seed, voipbin

    errors.register_error_handlers(app)
    app.register_blueprint(ops.bp)
    app.register_blueprint(seed.bp)
    app.register_blueprint(voipbin.bp)
    app.register_blueprint(talk.bp)
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
        # Half configured (one of the two set) is a mistake worth a WARNING; neither is a choice.
        half = bool(cfg["VOIPBIN_WEBHOOK_SECRET"] or cfg["VOIPBIN_ALLOW_UNSIGNED"]) != bool(cfg["VOIPBIN_ACCESS_KEY"])
        log.log(logging.WARNING if half else logging.INFO, reason)
        return
    from .voipbin.bridge import VoipbinBridge, VoipbinSettings
    from .voipbin.client import VoipbinClient

    # The settings check made sure the model's deadline and one REST call fit
    # in the webhook's budget (config.check).
    client = VoipbinClient(cfg["VOIPBIN_API_URL"], cfg["VOIPBIN_ACCESS_KEY"],
                           read_timeout=cfg["VOIPBIN_TIMEOUT_SECONDS"])
    bridge = VoipbinBridge(conversation, client, VoipbinSettings.from_config(cfg))
    app.extensions["voipbin"] = bridge
    if not cfg["VOIPBIN_WEBHOOK_SECRET"]:
        log.warning("/webhook/voipbin accepts UNSIGNED events (VOIPBIN_ALLOW_UNSIGNED=1): "
                    "anyone who finds the URL can drive calls; for local trials only")
    numbers = ", ".join(sorted(bridge.settings.numbers)) or "no number (VOIPBIN_NUMBERS is empty)"
    fetch = ("and calls handed over by /webhook/voipbin/fetch" if cfg["VOIPBIN_FETCH_TOKEN"]
             else "and no call by fetch (VOIPBIN_FETCH_TOKEN is empty)")
    log.info("/webhook/voipbin is on, speaking through %s; answering incoming calls to %s, %s",
             cfg["VOIPBIN_API_URL"], numbers, fetch)
    if not bridge.settings.numbers and not cfg["VOIPBIN_FETCH_TOKEN"]:
        log.warning("/webhook/voipbin will answer no call: set VOIPBIN_NUMBERS or VOIPBIN_FETCH_TOKEN "
                    "(`voicebot voipbin setup` does both)")


def _announce(app: "Flask", store, llm) -> None:
    """Say at start-up what this process will do, so a misconfiguration shows at once."""
    from .exceptions import StoreError

    if not app.config["WEBHOOK_TOKEN"]:
        log.warning("WEBHOOK_TOKEN is not set: /webhook/call-started and /webhook/transcript answer only "
                    "requests made on this machine (a local trial); set it to call them from anywhere else")
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

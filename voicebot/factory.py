"""The app factory: settings checked, the runtime built (store, records, model, tools, context), every
platform registered, as Flask's tutorial's ``create_app`` does."""

from __future__ import annotations

import logging
import threading
from typing import Any, Mapping

from flask import Flask

from . import talk
from .admission import Admission, in_flight_limit
from .context import ContextSource
from .conversation import Conversation
from .deadline import RESPONSE_BUDGET, Deadline, put_in_effect
from .exceptions import StoreError
from .llm import LLM, build_llm
from .llm.health import LLMHealth, MonitoredLLM
from .logs import configure_logging
from .operator_tools import ToolCaller, address_policy, load_tools
from .platform import ConversationFactory, Platform
from .platforms import PLATFORMS, load_config
from .records.outbox import build_outbox
from .runtime import Runtime, runtime_of
from .session import ConversationSettings
from .stores import SessionStore, build_store
from .stores.settings import store_description
from .web import errors, health, openapi

log = logging.getLogger("voicebot")


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app from the environment, with ``test_config`` laid over it."""
    app = Flask("voicebot")
    app.config.from_mapping(load_config(overlay=test_config))
    cfg = app.config
    cfg["MAX_CONTENT_LENGTH"] = cfg["MAX_BODY_BYTES"]
    app.json.compact = True  # type: ignore[attr-defined]
    configure_logging(cfg["LOG_LEVEL"])

    store = build_store(cfg)
    records = build_outbox(cfg)
    llm_health = LLMHealth(store, key_setting="OPENAI_API_KEY" if cfg["LLM_PROVIDER"] == "openai"
                           else "ANTHROPIC_API_KEY")
    llm = MonitoredLLM(build_llm(cfg), llm_health)
    settings = ConversationSettings.from_config(cfg)
    policy = address_policy(cfg)
    tools = load_tools(cfg["TOOLS_FILE"], policy) if cfg["TOOLS_FILE"] else []
    caller = (ToolCaller(cfg["TOOLS_SECRET"], tools, policy=policy, per_tool=cfg["TOOLS_MAX_IN_FLIGHT"])
              if tools else None)
    context = (ContextSource(cfg["CONTEXT_URL"], cfg["CONTEXT_SECRET"], timeout=cfg["CONTEXT_TIMEOUT_SECONDS"],
                             policy=policy) if cfg["CONTEXT_URL"] else None)
    runtime = Runtime(store=store, records=records, llm=llm, llm_health=llm_health,
                      admission=Admission(in_flight_limit(cfg["WEB_THREADS"])), tool_caller=caller, context=context,
                      socket_slots=threading.BoundedSemaphore(cfg["MAX_SOCKET_CALLS"]
                                                              or max(1, cfg["WEB_THREADS"] // 4)))
    runtime.install(app)
    # Read at each scrape of /metrics (with Redis: across all instances); packages add theirs.
    runtime.gauges += [("voicebot_active_calls", "Calls with a live session (with Redis: across all instances)",
                        store.active_calls),
                       ("voicebot_call_records_oldest_undelivered_seconds",
                        "Age of the oldest end-of-call record not yet delivered (0: none)", records.oldest_undelivered)]
    _announce(app, store, llm)
    if tools:
        log.info("tools the model may use: %s", ", ".join(t.name for t in tools))

    def conversation_for(platform: Platform) -> ConversationFactory:
        def conversation(*, ends_for_good: bool = False, ended_calls_kept: float | None = None) -> Conversation:
            built = runtime.conversations[platform.name] = Conversation(
                store, llm, settings, namespace=platform.name, records=records, operator_tools=tools,
                tool_caller=caller, ended_calls_kept=ended_calls_kept, ends_for_good=ends_for_good, context=context)
            return built
        return conversation

    # What holds connections, let go of when the worker exits (close_app); platforms add theirs.
    runtime.closers += [c.close for c in (store, llm, records, caller, context) if c is not None]
    # Each request's budget, for the waits no view passes a deadline to (a Redis step through a failover).
    app.before_request(lambda: put_in_effect(Deadline(RESPONSE_BUDGET)))
    app.teardown_request(lambda exc: put_in_effect(None))
    errors.register_error_handlers(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(openapi.bp)
    for platform in PLATFORMS:
        platform.init_app(app, conversation_for(platform))
    app.register_blueprint(talk.bp)
    return app


def close_app(app: Flask) -> None:
    """Let go of every connection the app holds (gunicorn's worker_exit); the app is not used afterwards."""
    runtime = runtime_of(app)
    closers, runtime.closers = runtime.closers, []
    for close in reversed(closers):
        try:
            close()
        except Exception:  # one that fails must not keep the others open
            log.exception("closing %r failed", close)


def _announce(app: Flask, store: SessionStore, llm: LLM) -> None:
    """Say at start-up what this process will do, so a misconfiguration shows at once."""
    if not app.config["WEBHOOK_TOKEN"]:
        log.warning("WEBHOOK_TOKEN is not set: /webhook/call-started and /webhook/transcript answer only "
                    "requests made on this machine (a local trial); set it to call them from anywhere else")
    if llm.name == "offline":
        log.warning("ANTHROPIC_API_KEY is not set: replies come from the OFFLINE responder, not a model")
    else:
        where = f" at {app.config['OPENAI_BASE_URL']}" if app.config["LLM_PROVIDER"] == "openai" else ""
        log.info("replies from %s model %s%s", llm.name, app.config["LLM_MODEL"], where)
    where = store_description(app.config)
    try:
        store.ping()
        log.info("session store: %s", where)
    except StoreError as exc:
        log.error("session store %s does not answer (%s); /readyz reports 503 until it does", where, exc)

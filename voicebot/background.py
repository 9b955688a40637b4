"""The work a worker process does between requests: reap expired calls, analyse and deliver records, and
whatever a platform registered in the runtime's ``workers`` (the campaign runner).

Started once per worker process, after the fork (gunicorn's post_worker_init,
or app.py for ``flask run``), and stopped with the app. Every worker of every
instance runs both: the per-call lock and the consumer group keep them from
doing the same call or record twice.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from flask import Flask

from .conversation import Conversation
from .exceptions import StoreError
from .llm import build_llm
from .records.analysis import AnalysisLoop, Analyst
from .records.plan import load_plan
from .records.delivery import DeliveryLoop, RecordSender
from .runtime import Worker, runtime_of
from .stores import SessionStore

log = logging.getLogger(__name__)

REAP_EVERY_SECONDS = 15.0


class Reaper(threading.Thread):
    """Turns every call idle for the session TTL into its end-of-call record, through its platform's
    Conversation, every ``every`` seconds."""

    def __init__(self, store: SessionStore, conversations: list[Conversation],
                 every: float = REAP_EVERY_SECONDS) -> None:
        super().__init__(name="call-reaper", daemon=True)
        self.store = store
        self.conversations = conversations
        self.every = every
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(self.every):
            self.reap_once()

    def reap_once(self) -> int:
        try:
            return self.store.reap(self._expired)
        except StoreError as exc:
            log.warning("reaper: the session store failed: %s", exc)
            return 0

    def _expired(self, key: str, session: dict[str, Any], lines: list[dict[str, Any]]) -> None:
        for conversation in self.conversations:
            call_id = conversation.call_id_of(key)
            if call_id is not None:
                conversation.expired(call_id, session, lines)
                return

    def stop(self) -> None:
        self.stopping.set()


def start(app: Flask) -> list[Worker]:
    """Start this process's reaper, deliveries and analysis for ``app`` (once; later calls return the same)."""
    runtime = runtime_of(app)
    if runtime.running:
        return runtime.running
    config = app.config
    # A record comes within a quarter of the TTL of a call's expiry, or 15 s.
    every = min(REAP_EVERY_SECONDS, config["SESSION_TTL_SECONDS"] / 4)
    threads: list[Worker] = [Reaper(runtime.store, list(runtime.conversations.values()), every=every)]
    if config["CALL_REPORT_URL"]:
        sender = RecordSender(config["CALL_REPORT_URL"], config["CALL_REPORT_SECRET"])
        threads.append(DeliveryLoop(runtime.records, sender, give_up_after=config["CALL_REPORT_RETRY_SECONDS"]))
    if config["ANALYSIS_FILE"]:
        threads.append(_analysis_loop(app))
    # What the platforms and packages registered to run in each worker too (the campaign runner).
    threads += [make() for make in runtime.workers]
    for thread in threads:
        thread.start()
    runtime.running = threads
    return threads


def stop(app: Flask) -> None:
    runtime = runtime_of(app)
    running, runtime.running = runtime.running, []
    for thread in running:
        thread.stop()
        thread.join(5)


def _analysis_loop(app: Flask) -> AnalysisLoop:
    """The worker's analysis loop, with a model adapter of its own (its answers are longer than a turn's)."""
    config = app.config
    runtime = runtime_of(app)
    llm = build_llm({**config, "LLM_MAX_TOKENS": config["ANALYSIS_MAX_TOKENS"], "PROMPT_CACHING": False})
    runtime.closers.append(llm.close)
    analyst = Analyst(llm, load_plan(config["ANALYSIS_FILE"]), config["ANALYSIS_TIMEOUT_SECONDS"])
    return AnalysisLoop(runtime.records, analyst)

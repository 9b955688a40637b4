"""The work a worker process does between requests: reap expired calls, analyse and deliver records, and
whatever a platform registered in ``app.extensions["workers"]`` (the campaign runner).

Started once per worker process, after the fork (gunicorn's post_worker_init,
or app.py for ``flask run``), and stopped with the app. Every worker of every
instance runs both: the per-call lock and the consumer group keep them from
doing the same call or record twice.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from ..exceptions import StoreError

if TYPE_CHECKING:
    from flask import Flask

    from ..conversation import Conversation
    from ..stores import SessionStore

log = logging.getLogger(__name__)

REAP_EVERY_SECONDS = 15.0


class Reaper(threading.Thread):
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


def start(app: "Flask") -> list[threading.Thread]:
    """Start this process's reaper and delivery loop for ``app`` (once; later calls return the same)."""
    running: list[threading.Thread] | None = app.extensions.get("background")
    if running is not None:
        return running
    from .delivery import DeliveryLoop, RecordSender

    config = app.config
    conversations = list(app.extensions["conversations"].values())
    # A record comes within a quarter of the TTL of a call's expiry, or 15 s.
    every = min(REAP_EVERY_SECONDS, config["SESSION_TTL_SECONDS"] / 4)
    threads: list[Any] = [Reaper(app.extensions["store"], conversations, every=every)]
    if config["CALL_REPORT_URL"]:
        sender = RecordSender(config["CALL_REPORT_URL"], config["CALL_REPORT_SECRET"])
        threads.append(DeliveryLoop(app.extensions["records"], sender,
                                    give_up_after=config["CALL_REPORT_RETRY_SECONDS"]))
    if config["ANALYSIS_FILE"]:
        threads.append(_analysis_loop(app))
    # What the platforms and packages registered to run in each worker too (the campaign runner).
    threads += [make() for make in app.extensions.get("workers", [])]
    for thread in threads:
        thread.start()
    app.extensions["background"] = threads
    return threads


def stop(app: "Flask") -> None:
    for thread in app.extensions.pop("background", []):
        thread.stop()
        thread.join(5)


def _analysis_loop(app: "Flask") -> threading.Thread:
    """The worker's analysis loop, with a model adapter of its own (its answers are longer than a turn's)."""
    from ..llm import build_llm
    from .analysis import Analyst, AnalysisLoop, load_plan

    config = app.config
    llm = build_llm({**config, "LLM_MAX_TOKENS": config["ANALYSIS_MAX_TOKENS"], "PROMPT_CACHING": False})
    app.extensions["closers"].append(llm.close)
    analyst = Analyst(llm, load_plan(config["ANALYSIS_FILE"]), config["ANALYSIS_TIMEOUT_SECONDS"])
    return AnalysisLoop(app.extensions["records"], analyst)

"""Whether the model's API is refusing our key: loud in the log, counted, and shown by /readyz.

A wrong or revoked ``ANTHROPIC_API_KEY`` otherwise only makes every caller
hear the fallback line. The state is kept in the session store, so every
worker and instance reports it, until a call to the model succeeds again.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Sequence

from .. import metrics
from ..exceptions import LLMKeyRejected, StoreError
from ..stores import SessionStore
from ..tools import Tool
from .base import LLM, Message, OnText, Reply

log = logging.getLogger(__name__)

_FLAG = "health:llm-key"
# How often a worker that has not seen the rejection itself looks at the shared flag.
_RECHECK_SECONDS = 5.0


class LLMHealth:
    """Whether the model's key was rejected, remembered in the store so that every worker's /readyz says so."""

    def __init__(self, store: SessionStore, clock: Callable[[], float] = time.monotonic, *,
                 key_setting: str = "ANTHROPIC_API_KEY") -> None:
        self.store = store
        self.key_setting = key_setting  # the setting to fix, as the log names it
        self.clock = clock
        self._seen_rejected = False
        self._checked_at = float("-inf")

    def key_rejected(self, detail: str) -> None:
        log.error("the model's API rejected %s (%s): every caller hears FALLBACK_REPLY until "
                  "it is fixed; /readyz answers 503 meanwhile", self.key_setting, detail)
        metrics.ERRORS.labels("llm_key_rejected").inc()
        self._seen_rejected = True
        self._set("rejected")

    def succeeded(self) -> None:
        if not self._seen_rejected and self.clock() - self._checked_at < _RECHECK_SECONDS:
            return
        self._checked_at = self.clock()
        if self._seen_rejected or self.rejected():
            self._seen_rejected = False
            self._set("ok")
            log.info("the model's API accepts %s again", self.key_setting)

    def rejected(self) -> bool:
        try:
            return self.store.recall(_FLAG) == "rejected"
        except StoreError:
            return self._seen_rejected

    def _set(self, value: str) -> None:
        try:
            self.store.remember(_FLAG, value)
        except StoreError:
            pass  # the store being down is reported by /readyz already


class MonitoredLLM(LLM):
    """An adapter that tells LLMHealth how each call went."""

    def __init__(self, llm: LLM, health: LLMHealth) -> None:
        self.inner = llm
        self.health = health
        self.name = llm.name

    def reply(self, system: str, messages: Sequence[Message], timeout: float,
              tools: Sequence[Tool] = (), allow_tools: bool = True, *, force_tool: str | None = None) -> Reply:
        return self._watched(lambda: self.inner.reply(system, messages, timeout, tools, allow_tools,
                                                      force_tool=force_tool))

    def stream_reply(self, system: str, messages: Sequence[Message], timeout: float, on_text: OnText,
                     tools: Sequence[Tool] = (), allow_tools: bool = True, *, as_written: bool = False) -> Reply:
        return self._watched(lambda: self.inner.stream_reply(system, messages, timeout, on_text, tools, allow_tools,
                                                             as_written=as_written))

    def _watched(self, call: Callable[[], Reply]) -> Reply:
        try:
            answer = call()
        except LLMKeyRejected as exc:
            self.health.key_rejected(str(exc))
            raise
        self.health.succeeded()
        return answer

    def close(self) -> None:
        self.inner.close()

"""The conversation core: one isolated, serialized history per call.

It knows nothing of HTTP or of any webhook contract; each contract's views
translate their events into ``start_call``, ``take_turn`` and ``end_call``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Mapping

from .config import lock_wait_seconds
from .exceptions import LLMError, LockLost
from .llm import LLM, Message
from .speakable import make_speakable
from .stores import SessionStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConversationSettings:
    system_prompt: str
    greeting: str
    fallback_reply: str
    max_history_turns: int
    max_reply_chars: int
    llm_timeout: float
    lock_wait: float

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "ConversationSettings":
        return cls(
            system_prompt=config["SYSTEM_PROMPT"],
            greeting=config["GREETING"],
            fallback_reply=config["FALLBACK_REPLY"],
            max_history_turns=config["MAX_HISTORY_TURNS"],
            max_reply_chars=config["MAX_REPLY_CHARS"],
            llm_timeout=config["LLM_TIMEOUT_SECONDS"],
            lock_wait=lock_wait_seconds(config),
        )


@dataclass(frozen=True)
class Turn:
    reply: str
    fallback: bool  # the model failed and the caller hears FALLBACK_REPLY


def new_session(call_id: str, caller: str | None) -> dict:
    return {"call_id": call_id, "caller": caller, "started_at": time.time(), "turns": 0, "messages": []}


class Conversation:
    def __init__(self, store: SessionStore, llm: LLM, settings: ConversationSettings) -> None:
        self.store = store
        self.llm = llm
        self.settings = settings
        # The greeting was said before the first message the model sees; the
        # Messages API wants the history to open with the caller, so the
        # greeting travels in the system prompt.
        self._system = f'{settings.system_prompt}\n\nYou opened this call by saying: "{settings.greeting}"'

    def start_call(self, call_id: str, caller: str | None = None) -> str:
        """Open the call's session (a live call keeps its history) and return the greeting."""
        started = time.monotonic()
        with self.store.locked(call_id, self.settings.lock_wait) as record:
            session = record.data
            resumed = session is not None
            if session is None:
                session = new_session(call_id, caller)
            elif caller and not session.get("caller"):
                session["caller"] = caller
            record.save(session, release=True)
        log.info("call started call_id=%s resumed=%s lock_wait_ms=%.1f total_ms=%.1f",
                 call_id, resumed, record.lock_wait * 1000, (time.monotonic() - started) * 1000)
        return self.settings.greeting

    def take_turn(self, call_id: str, text: str, caller: str | None = None) -> Turn:
        """Add what the caller said, ask the model, add and return its reply.

        The call's lock is held from read to write, so two turns of one call
        run one after the other and each sees the other's words.
        """
        started = time.monotonic()
        with self.store.locked(call_id, self.settings.lock_wait) as record:
            session = record.data or new_session(call_id, caller)
            turn, llm_seconds = self._converse(session, text)
            try:
                record.save(session, release=True)
            except LockLost:
                log.error("turn not saved call_id=%s: the call's lock lease ran out during the turn; "
                          "raise LOCK_LEASE_SECONDS above LLM_TIMEOUT_SECONDS", call_id)
        log.info("turn call_id=%s turn=%d outcome=%s lock_wait_ms=%.1f llm_ms=%.1f total_ms=%.1f",
                 call_id, session["turns"], "fallback" if turn.fallback else "reply",
                 record.lock_wait * 1000, llm_seconds * 1000, (time.monotonic() - started) * 1000)
        log.debug("turn call_id=%s heard=%r said=%r", call_id, text, turn.reply)
        return turn

    def end_call(self, call_id: str) -> bool:
        """Forget the call; a later event with its id starts afresh. False if it was not known."""
        with self.store.locked(call_id, self.settings.lock_wait) as record:
            known = record.data is not None
            record.delete()
        log.info("call ended call_id=%s known=%s", call_id, known)
        return known

    def _converse(self, session: dict, text: str) -> tuple[Turn, float]:
        history: list[Message] = session["messages"]
        history.append({"role": "user", "content": text})
        asked = time.monotonic()
        try:
            reply = make_speakable(self.llm.reply(self._system, history, self.settings.llm_timeout),
                                   self.settings.max_reply_chars)
            fallback = not reply
            if fallback:
                log.warning("llm gave nothing speakable call_id=%s", session["call_id"])
        except LLMError as exc:
            log.warning("llm failed call_id=%s error=%s: %s", session["call_id"], type(exc).__name__, exc)
            reply, fallback = "", True
        llm_seconds = time.monotonic() - asked
        if fallback:
            reply = self.settings.fallback_reply
        # What the caller heard goes into the history, fallback included, so
        # the roles keep alternating and the model knows what was said.
        history.append({"role": "assistant", "content": reply})
        del history[: max(0, len(history) - 2 * self.settings.max_history_turns)]
        session["turns"] += 1
        return Turn(reply, fallback), llm_seconds

"""The conversation core: one isolated, serialized history per call.

It knows nothing of HTTP or of any webhook contract; each contract's views
translate their events into ``start_call``, ``take_turn`` and ``end_call``.
Each contract has a Conversation of its own, with its own ``namespace``: a
call id sent to one contract can never reach a call of another.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, TypeVar

from . import metrics
from .config import lock_wait_seconds
from .deadline import Deadline, unbounded
from .exceptions import CallBusy, LLMError, LockLost, StoreError
from .llm import LLM, Message
from .speakable import make_speakable
from .stores import CallRecord, SessionStore

log = logging.getLogger(__name__)

T = TypeVar("T")


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
    fallback: bool = False  # the model failed and the caller hears FALLBACK_REPLY
    duplicate: bool = False  # this event was handled before; nothing was done again
    llm_seconds: float = 0.0  # time spent waiting on the model
    recorded: bool = True  # False: the call's lease ran out and the turn was not saved


# A contract's own per-call state (ids on the telephony platform, say) lives
# in the session under "channel" and is handed to these hooks, which run
# under the call's lock. Each gets a ``Renew`` to call before every step that
# may take a while (a REST request), so the lease outlives the hook. In
# ``attach`` it is a checkpoint: it also saves the channel as it is now, so a
# long set-up keeps what it has done even if a later step fails. Otherwise a
# hook that raises leaves the session as it was.
Renew = Callable[[], None]
Checkpoint = Renew
Attach = Callable[[dict, Checkpoint], None]
Deliver = Callable[[str, dict, Renew], None]
Detach = Callable[[dict], None]


def new_session(call_id: str, caller: str | None) -> dict:
    return {"call_id": call_id, "caller": caller, "started_at": time.time(), "turns": 0,
            "messages": [], "channel": {}}


class Conversation:
    def __init__(self, store: SessionStore, llm: LLM, settings: ConversationSettings,
                 namespace: str = "") -> None:
        self.store = store
        self.llm = llm
        self.settings = settings
        self.namespace = namespace
        # The greeting was said before the first message the model sees; the
        # Messages API wants the history to open with the caller, so the
        # greeting travels in the system prompt.
        self._system = f'{settings.system_prompt}\n\nYou opened this call by saying: "{settings.greeting}"'

    def key(self, call_id: str) -> str:
        """The call's name in the store, inside this contract's namespace."""
        return f"{self.namespace}:{call_id}" if self.namespace else call_id

    def _lock_wait(self, deadline: Deadline, keep: float) -> float:
        wait = deadline.cap(self.settings.lock_wait, keep=keep)
        if wait <= 0:
            raise CallBusy("no time left in this webhook's budget to wait for the call")
        return wait

    def start_call(self, call_id: str, caller: str | None = None, *, attach: Attach | None = None,
                   deadline: Deadline | None = None) -> str | None:
        """Open the call's session (a live call keeps its history) and return the greeting.

        ``attach`` may set up the call's channel first. None when the call has
        already ended for good (see ``end_call(final=True)``).
        """
        started = time.monotonic()
        deadline = deadline or unbounded()
        key = self.key(call_id)
        with self.store.locked(key, self._lock_wait(deadline, keep=0.5)) as record:
            session = record.data
            if session is None and self._ended(key):
                log.info("call started ignored call_id=%s: the call has ended", call_id)
                return None
            resumed = session is not None
            if session is None:
                session = new_session(call_id, caller)
                metrics.CALLS.labels("started").inc()
            elif caller and not session.get("caller"):
                session["caller"] = caller
            if attach is not None:
                attach(session["channel"], lambda: record.save(session))
            record.save(session, release=True)
        log.info("call started call_id=%s resumed=%s lock_wait_ms=%.1f total_ms=%.1f",
                 call_id, resumed, record.lock_wait * 1000, (time.monotonic() - started) * 1000)
        return self.settings.greeting

    def take_turn(self, call_id: str, text: str, caller: str | None = None, *,
                  event_id: str | None = None, deliver: Deliver | None = None,
                  deadline: Deadline | None = None, deliver_seconds: float = 0.0) -> Turn | None:
        """Add what the caller said, ask the model, add and return its reply.

        The call's lock is held from read to write, so two turns of one call
        run one after the other and each sees the other's words. With
        ``event_id``, an event handled before (in the call's whole life) is
        not handled again. With ``deliver``, the reply is handed on (spoken)
        before the turn is saved, and ``deliver_seconds`` of the deadline are
        kept for it: if delivery fails, the turn is not recorded and the event
        can be retried as if it had never come. None when the call has ended
        for good.
        """
        started = time.monotonic()
        deadline = deadline or unbounded()
        key = self.key(call_id)
        # The wait leaves room for at least a short model call and the delivery.
        wait = self._lock_wait(deadline, keep=deliver_seconds + min(1.0, self.settings.llm_timeout))
        with self.store.locked(key, wait, event_id) as record:
            session = record.data
            if session is None and self._ended(key):
                log.info("turn ignored call_id=%s: the call has ended", call_id)
                return None
            if record.seen:
                log.info("turn skipped call_id=%s event_id=%s: already handled", call_id, event_id)
                metrics.TURNS.labels("duplicate").inc()
                return Turn("", duplicate=True)
            if session is None:
                session = new_session(call_id, caller)
                metrics.CALLS.labels("started").inc()
            turn = self._converse(session, text, deadline.cap(self.settings.llm_timeout, keep=deliver_seconds))
            if deliver is not None:
                deliver(turn.reply, session["channel"], record.renew)
            recorded = self._save_turn(record, session, event_id, delivered=deliver is not None)
        total = time.monotonic() - started
        outcome = "fallback" if turn.fallback else "reply"
        metrics.TURNS.labels(outcome).inc()
        metrics.TURN_SECONDS.observe(total)
        metrics.LLM_SECONDS.observe(turn.llm_seconds)
        metrics.LOCK_WAIT_SECONDS.observe(record.lock_wait)
        log.info("turn call_id=%s turn=%d outcome=%s lock_wait_ms=%.1f llm_ms=%.1f total_ms=%.1f",
                 call_id, session["turns"], outcome, record.lock_wait * 1000, turn.llm_seconds * 1000,
                 total * 1000)
        log.debug("turn call_id=%s heard=%r said=%r", call_id, text, turn.reply)
        if not recorded:
            return Turn(turn.reply, turn.fallback, llm_seconds=turn.llm_seconds, recorded=False)
        return turn

    def end_call(self, call_id: str, *, detach: Detach | None = None, final: bool = False,
                 deadline: Deadline | None = None) -> bool:
        """Forget the call. False if it was not known.

        Without ``final`` a later event with the same id starts afresh (the
        article's contract). With it, a tombstone (an alias) stays for the
        session TTL and later events of the call are ignored: platforms whose
        call ids are never reused deliver events late and out of order, and a
        late "call answered" must not reopen a call that has hung up.
        """
        key = self.key(call_id)
        with self.store.locked(key, self._lock_wait(deadline or unbounded(), keep=0.5)) as record:
            session = record.data
            known = session is not None
            if known:
                metrics.CALLS.labels("ended").inc()
            if known and detach is not None:
                detach(session["channel"])
            if final:
                self.store.set_alias(_tombstone(key), "1")
            record.delete()
        log.info("call ended call_id=%s known=%s", call_id, known)
        return known

    def mark_event(self, call_id: str, event_id: str) -> bool:
        """Remember an event handled outside a turn (no lock); False if it was handled before."""
        return self.store.mark_event(self.key(call_id), event_id)

    def with_channel(self, call_id: str, change: Callable[[dict], T], *, wait: float) -> T | None:
        """Run ``change`` on the call's channel under its lock and save it; None for a call not known."""
        with self.store.locked(self.key(call_id), wait) as record:
            if record.data is None:
                return None
            result = change(record.data["channel"])
            record.save(record.data, release=True)
            return result

    def channel(self, call_id: str) -> dict | None:
        """The call's channel state as stored now, without waiting for a turn in flight."""
        session = self.store.peek(self.key(call_id))
        return None if session is None else session.get("channel", {})

    def ended(self, call_id: str) -> bool:
        return self._ended(self.key(call_id))

    def keep_alive(self, call_id: str) -> bool:
        """Restart the call's TTL: a long silence is not the end of a live call."""
        return self.store.touch(self.key(call_id))

    def _ended(self, key: str) -> bool:
        return self.store.get_alias(_tombstone(key)) is not None

    def _save_turn(self, record: CallRecord, session: dict, event_id: str | None, delivered: bool) -> bool:
        try:
            record.save(session, release=True, event_id=event_id)
        except LockLost:
            # Another turn of the call may have run meanwhile: this one's
            # history would overwrite it, so it is dropped, and said so.
            log.error("turn not saved call_id=%s: the call's lock lease ran out during the turn",
                      session["call_id"])
            metrics.ERRORS.labels("lock_lost").inc()
            return False
        except StoreError:
            if not delivered:
                raise
            # The caller has heard the reply: failing the request now would
            # only make the platform deliver the event, and say it, again.
            log.exception("turn said but not saved call_id=%s", session["call_id"])
            return False
        return True

    def _converse(self, session: dict, text: str, llm_timeout: float) -> Turn:
        history: list[Message] = session["messages"]
        history.append({"role": "user", "content": text})
        asked = time.monotonic()
        try:
            reply = make_speakable(self.llm.reply(self._system, history, llm_timeout),
                                   self.settings.max_reply_chars)
            fallback = not reply
            if fallback:
                log.warning("llm gave nothing speakable call_id=%s", session["call_id"])
                metrics.FALLBACKS.labels("unspeakable").inc()
        except LLMError as exc:
            log.warning("llm failed call_id=%s error=%s: %s", session["call_id"], type(exc).__name__, exc)
            metrics.FALLBACKS.labels(type(exc).__name__).inc()
            reply, fallback = "", True
        llm_seconds = time.monotonic() - asked
        if fallback:
            reply = self.settings.fallback_reply
        # What the caller heard goes into the history, fallback included, so
        # the roles keep alternating and the model knows what was said.
        history.append({"role": "assistant", "content": reply})
        del history[: max(0, len(history) - 2 * self.settings.max_history_turns)]
        session["turns"] += 1
        return Turn(reply, fallback, llm_seconds=llm_seconds)


def _tombstone(key: str) -> str:
    return f"ended:{key}"

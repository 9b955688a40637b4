"""A call's lifecycle: one isolated, serialized session per call, and its record when it ends.

It knows nothing of HTTP or of any webhook contract; each platform's views
translate their events into ``start_call``, ``take_turn`` and ``end_call``,
and hand it a ``Speaker`` (``voicebot.speaker``) for what the platform does
for the call. The turn itself (the model, tools, streaming, budget) is the
turn engine's (``voicebot.turn``); the types both share are in
``voicebot.session``. Each platform has a Conversation of its own, with its
own ``namespace``: a call id sent to one platform can never reach a call of
another.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any, Callable, Mapping, Sequence, TypeVar, cast

from . import metrics, placeholders
from .context import CallFacts, ContextSource
from .deadline import Deadline, unbounded
from .exceptions import CallBusy, LockLost, StoreError
from .llm import LLM
from .operator_tools import HttpTool, ToolCaller
from .records.outbox import Outbox
from .records.record import build_record
from .records.record import outcome_of
from .session import (CallContext, Channel, ConversationSettings, Line, Session, call_variables, line,
                      new_session)
from .speaker import ResponseSpeaker, Speaker
from .stores import CallRecord, SessionStore
from .tools import TRANSFER_CALL, Tool, lifecycle_prompt, lifecycle_tools
from .turn import Budget, Turn, TurnEngine

log = logging.getLogger(__name__)

T = TypeVar("T")

Attach = Callable[[CallContext], None]
Detach = Callable[[Channel], None]


class Conversation:
    """One platform's calls: each an isolated history, served one turn at a time, ended with one record.

    A platform's views hold one of these (its own ``namespace``) and speak to
    it in three verbs: ``start_call`` (the greeting), ``take_turn`` (what the
    caller said in, a ``Turn`` out, its words said and its action taken
    through the platform's ``Speaker``) and ``end_call`` (the record). Every
    verb holds the call's lock from read to write, through the store, so two
    events of one call never interleave, on any worker of any instance; a
    write whose lease ran out is refused by the store (fenced by the lock's
    token). It knows no HTTP and no platform: a platform's own state of a
    call travels in the session as its ``channel``.

    ``ends_for_good``: the platform never reuses a call id, so an ended call
    stays ended (a tombstone) for ``ended_calls_kept`` seconds (None: the
    session TTL) and its late events are ignored.
    """

    def __init__(self, store: SessionStore, llm: LLM, settings: ConversationSettings,
                 namespace: str = "", records: Outbox | None = None,
                 operator_tools: list[HttpTool] | None = None, tool_caller: ToolCaller | None = None,
                 ended_calls_kept: float | None = None, ends_for_good: bool = False,
                 context: ContextSource | None = None) -> None:
        self.store = store
        self.context = context
        self.settings = settings
        self.namespace = namespace
        self.records = records
        self.ends_for_good = ends_for_good or ended_calls_kept is not None
        # How long a call ended for good stays ended (None: the session TTL). A platform whose requests
        # carry no time (Twilio's signatures) keeps it for as long as it could still send one.
        self.ended_calls_kept = ended_calls_kept
        self.tools: list[Tool] = [*lifecycle_tools(settings.transfer_number), *(operator_tools or [])]
        # Worked out once: a call with no variables and no context of its own (most, without CONTEXT_URL) uses it.
        self._system = self._compose_system("inbound", {}, "")
        self.engine = TurnEngine(llm, settings, namespace or "voicebot", tool_caller)
        # Told each end-of-call record as it is made (a campaign learns its calls' outcomes); each must be
        # quick and may be told a record twice (made again after a crash).
        self.end_listeners: list[Callable[[dict[str, Any]], None]] = []

    @property
    def llm(self) -> LLM:
        return self.engine.llm

    def greeting_for(self, session: Session) -> str:
        """The greeting this call hears (GREETING, or OUTBOUND_GREETING for a call voicebot placed), its
        placeholders filled from the call's variables."""
        direction = session.get("direction", "inbound")
        return placeholders.fill(self.settings.greeting_of(direction), call_variables(session))

    def system_for(self, session: Session) -> str:
        """The system prompt of this call's turns, with its variables and its context's instructions."""
        direction = session.get("direction", "inbound")
        variables = call_variables(session)
        context = session.get("context")
        instructions = context["instructions"] if context else ""
        if not variables and not instructions and direction == "inbound":
            return self._system
        return self._compose_system(direction, variables, instructions)

    def _compose_system(self, direction: str, variables: dict[str, str], instructions: str) -> str:
        settings = self.settings
        parts = [placeholders.fill(settings.system_prompt_of(direction), variables),
                 lifecycle_prompt(settings.transfer_number)]
        if instructions:
            parts.append(f"About this call:\n{instructions}")
        # The greeting was said before the first message the model sees; the
        # Messages API wants the history to open with the caller, so the
        # greeting travels in the system prompt.
        greeting = placeholders.fill(settings.greeting_of(direction), variables)
        parts.append(f'You opened this call by saying: "{greeting}"')
        return "\n\n".join(parts)

    def cut_reply(self, call_id: str, heard: str) -> None:
        """The caller talked over the last reply: the history keeps what they heard of it, not what was written,
        and the transcript says where it was cut."""
        with self.store.locked(self.key(call_id), self.settings.lock_wait) as record:
            session = cast("Session | None", record.data)
            if session is None:
                return
            history = session["messages"]
            last = history[-1] if history else None
            if last is None or last["role"] != "assistant":
                return  # nothing of the bot's to cut: the platform's word is not history
            if isinstance(last["content"], str):
                block: dict[str, Any] = {"text": last["content"]}
            else:  # a reply that used a call tool: its words are its first text block
                block = next((b for b in last["content"] if b.get("type") == "text"), {"text": ""})
            # What they heard is at most what was said: the platform's report of it never makes it longer.
            heard = heard[:len(block["text"])]
            block["text"] = heard or "..."
            if isinstance(last["content"], str):
                last["content"] = block["text"]
            record.save(session, release=True, lines=[line("bot", heard, interrupted=True)])
        log.info("reply cut by the caller call_id=%s", call_id)

    def voicemail_for(self, call_id: str) -> str:
        """What an answering machine that took this (outbound) call is left: VOICEMAIL_MESSAGE, filled."""
        session = cast("Session | None", self.store.peek(self.key(call_id)))
        if session is not None and session.get("leave_voicemail") is False:
            return ""  # this call's campaign hangs up on machines
        variables = call_variables(session) if session is not None else {}
        return placeholders.fill(self.settings.voicemail_message, variables)

    def open_outbound(self, call_id: str, to: str, caller_id: str, variables: dict[str, str], *,
                      channel: Channel | None = None, campaign_id: str | None = None,
                      leave_voicemail: bool = True) -> None:
        """The session of a call voicebot has just placed: the contact is its caller, and its variables fill
        OUTBOUND_GREETING and OUTBOUND_SYSTEM_PROMPT when it is answered."""
        key = self.key(call_id)
        with self.store.locked(key, self.settings.lock_wait) as record:
            session = cast("Session | None", record.data)
            if session is None:
                session = new_session(call_id, to, called=caller_id, direction="outbound", variables=variables)
                metrics.CALLS.labels("placed").inc()
            session["channel"].update(channel or {})
            if campaign_id:
                session["campaign_id"] = campaign_id
            if not leave_voicemail:
                session["leave_voicemail"] = False
            record.save(session, release=True)
        log.info("call placed call_id=%s campaign=%s", call_id, campaign_id or "-")

    def _learn_context(self, session: Session, call: CallContext, deadline: Deadline, keep: float) -> None:
        """Ask CONTEXT_URL about the call, once in its life: the answer (or why there is none) is kept."""
        if self.context is None or "context" in session:
            return
        facts = CallFacts(session["call_id"], self.namespace or "voicebot", session.get("caller"),
                          session.get("called"), session.get("direction", "inbound"), session.get("variables") or {})
        call.extend_lease()
        session["context"] = self.context.ask(facts, deadline.cap(self.context.timeout, keep=keep))

    def key(self, call_id: str) -> str:
        """The call's name in the store, inside this platform's namespace."""
        return f"{self.namespace}:{call_id}" if self.namespace else call_id

    def call_id_of(self, key: str) -> str | None:
        """The call id a store key names, if the key is one of this platform's calls."""
        if not self.namespace:
            return key
        prefix = f"{self.namespace}:"
        return key[len(prefix):] if key.startswith(prefix) else None

    def _lock_wait(self, deadline: Deadline, keep: float) -> float:
        wait = deadline.cap(self.settings.lock_wait, keep=keep)
        if wait <= 0:
            raise CallBusy("no time left in this webhook's budget to wait for the call")
        return wait

    def start_call(self, call_id: str, caller: str | None = None, *, called: str | None = None,
                   attach: Attach | None = None, speaker: Speaker | None = None, greet: bool = True,
                   deadline: Deadline | None = None, variables: dict[str, str] | None = None) -> str | None:
        """Open the call's session (a live call keeps its history) and return the greeting.

        With ``greet``, CONTEXT_URL is asked about the call first (once in
        its life), ``attach`` may set up the call's channel, and the greeting
        (filled from the call's variables) is given once: said through
        ``speaker`` where it says words at once (otherwise the platform's
        response carries it) and put into the transcript. None when the call
        has already ended for good.
        """
        started = time.monotonic()
        deadline = deadline or unbounded()
        key = self.key(call_id)
        with self.store.locked(key, self._lock_wait(deadline, keep=0.5)) as record:
            session = cast("Session | None", record.data)
            if session is None and self._ended(key):
                log.info("call started ignored call_id=%s: the call has ended", call_id)
                return None
            resumed = session is not None
            if session is None:
                session = new_session(call_id, caller, called=called, variables=variables or None)
                metrics.CALLS.labels("started").inc()
            elif caller and not session.get("caller"):
                session["caller"] = caller
            # Bound to this session: a checkpoint keeps what a long set-up has done so far.
            kept = session
            call = CallContext(call_id, session["channel"], record.renew, lambda: record.save(kept))
            if greet and self.context is not None and "context" not in session:
                saying = speaker is not None and speaker.says_at_once
                self._learn_context(session, call, deadline, keep=2 * speaker.reserve_seconds + 0.5
                                    if speaker is not None and saying else 1.0)
                call.step()  # kept at once: a redelivery of this event does not ask again
            if attach is not None:
                attach(call)
            greeting = self.greeting_for(session)
            if greet and not session.get("greeted"):
                if speaker is not None and speaker.says_at_once:
                    call.step()
                    speaker.say(greeting, call)
                session["greeted"] = True
                call.said(greeting)
                metrics.GREETING_SECONDS.labels(self.namespace or "voicebot").observe(time.monotonic() - started)
            record.save(session, release=True, lines=call.lines)
        log.info("call started call_id=%s resumed=%s lock_wait_ms=%.1f total_ms=%.1f",
                 call_id, resumed, record.lock_wait * 1000, (time.monotonic() - started) * 1000)
        return greeting

    def take_turn(self, call_id: str, text: str, caller: str | None = None, *, event_id: str | None = None,
                  speaker: Speaker | None = None, deadline: Deadline | None = None) -> Turn:
        """Add what the caller said, ask the model, have the reply said and its action taken.

        The call's lock is held from read to write, so two turns of one call
        run one after the other and each sees the other's words. With
        ``event_id``, an event handled before (in the call's whole life) is
        not handled again, and the last one's reply is given back. The
        ``speaker`` (by default one whose platform's response carries the
        reply) is handed the reply before the turn is saved, with its
        ``reserve_seconds`` kept from the deadline: if that fails the turn is
        not saved, and the event can be sent again as if it had never come.
        A model call action is taken through the speaker once the turn is
        saved and the lock let go.
        """
        started = time.monotonic()
        deadline = deadline or unbounded()
        speaker = speaker or ResponseSpeaker()
        key = self.key(call_id)
        # The wait leaves room for at least a short model call and the delivery.
        wait = self._lock_wait(deadline, keep=speaker.reserve_seconds + min(1.0, self.settings.llm_timeout))
        with self.store.locked(key, wait, event_id) as record:
            session = cast("Session | None", record.data)
            if session is None and self._ended(key):
                log.info("turn ignored call_id=%s: the call has ended", call_id)
                return Turn.call_ended()
            if record.seen:
                log.info("turn skipped call_id=%s event_id=%s: already handled", call_id, event_id)
                metrics.TURNS.labels("duplicate").inc()
                last = (session or {}).get("last_turn")
                return Turn.duplicate(last["reply"] if last and last["event_id"] == event_id else "")
            call = CallContext(call_id, session["channel"] if session else {}, record.renew,
                               lines=[line("caller", text)])
            if session is None:
                # A call whose first event is a turn (the article's contract allows it): it starts here.
                session = new_session(call_id, caller)
                call.channel = session["channel"]
                metrics.CALLS.labels("started").inc()
                self._learn_context(session, call, deadline, keep=speaker.reserve_seconds + self.settings.llm_timeout)
            tools = [t for t in self.tools if t.name != TRANSFER_CALL or speaker.can_hand_off(call)]
            turn = self.engine.run(session, text, tools, Budget(deadline, speaker.reserve_seconds), call, speaker,
                                   self.system_for(session))
            call.lines.append(line("bot", turn.reply, fallback=turn.fallback,
                                   **({"error": turn.failure} if turn.failure else {})))
            speaker.deliver(turn.unsaid, call)
            if event_id is not None:
                session["last_turn"] = {"event_id": event_id, "reply": turn.reply}
            # Past this point the reply is out (said at once), or kept for the event the platform may send
            # again: a store failing now is logged, and the turn reported unsaved, rather than raised.
            saved = self._save_turn(record, session, event_id, call.lines,
                                    said=speaker.says_at_once or event_id is not None)
        total = time.monotonic() - started
        outcome = "fallback" if turn.fallback else "reply"
        metrics.TURNS.labels(outcome).inc()
        metrics.TURN_SECONDS.observe(total)
        metrics.LLM_SECONDS.observe(turn.llm_seconds)
        metrics.LOCK_WAIT_SECONDS.observe(record.lock_wait)
        log.info("turn call_id=%s turn=%d outcome=%s action=%s lock_wait_ms=%.1f llm_ms=%.1f total_ms=%.1f",
                 call_id, session["turns"], outcome, turn.action.type if turn.action else "-",
                 record.lock_wait * 1000, turn.llm_seconds * 1000, total * 1000)
        log.debug("turn call_id=%s heard=%r said=%r", call_id, text, turn.reply)
        if not saved:
            return replace(turn, saved=False)
        if turn.action is not None:
            self._act(call_id, turn, speaker, deadline)
        return turn

    def _act(self, call_id: str, turn: Turn, speaker: Speaker, deadline: Deadline) -> None:
        """After the words: the platform hangs up or hands the caller on; the record ends when it says so."""
        action = turn.action
        assert action is not None
        try:
            ends_now = speaker.act(action, call_id)
        except StoreError as exc:
            log.warning("call action not taken call_id=%s: %s", call_id, exc)
            return
        if ends_now:
            # The bot's part of the call, and its record, end here.
            transferred = action.type == "transfer"
            self.end_call(call_id, reason="transferred" if transferred else "bot_ended",
                          details={"transferred_to": action.to} if transferred else None, deadline=deadline)

    def end_call(self, call_id: str, *, reason: str = "ended", details: dict[str, Any] | None = None,
                 detach: Detach | None = None, deadline: Deadline | None = None, last_words: str = "") -> bool:
        """Forget the call, after making its end-of-call record. False if it was not known.

        Unless the platform ``ends_for_good`` a later event with the same id
        starts afresh (the article's contract). Otherwise a tombstone stays
        and later events of the call are ignored: platforms whose call ids are
        never reused deliver events late and out of order, and a late "call
        answered" must not reopen a call that has hung up.
        """
        key = self.key(call_id)
        with self.store.locked(key, self._lock_wait(deadline or unbounded(), keep=0.5)) as record:
            session = cast("Session | None", record.data)
            known = session is not None
            if session is not None:
                metrics.CALLS.labels("ended").inc()
                if detach is not None:
                    detach(session["channel"])
                lines: list[Mapping[str, Any]] = [*self.store.lines(key)]
                if last_words:
                    lines.append(line("bot", last_words))
                # Kept before it is forgotten: a crash in between makes it twice, with one id.
                self._keep_record(call_id, session, lines, reason, details)
            if self.ends_for_good:
                self.store.remember(_tombstone(key), "1", seconds=self.ended_calls_kept)
            record.delete()
        log.info("call ended call_id=%s known=%s reason=%s", call_id, known, reason)
        return known

    def expired(self, call_id: str, session: dict[str, Any], lines: Sequence[Mapping[str, Any]]) -> None:
        """The reaper's handler: a call idle for the session TTL gets its record too."""
        log.info("call expired call_id=%s: no event for the session TTL", call_id)
        self._keep_record(call_id, cast(Session, session), lines, "expired", None)

    def _keep_record(self, call_id: str, session: Session, lines: Sequence[Mapping[str, Any]], reason: str,
                     details: dict[str, Any] | None) -> None:
        outcome = outcome_of(session, reason)
        if outcome is not None:
            metrics.OUTBOUND.labels(outcome).inc()
        # Call ids kept ended for long are never reused: the record's id is the call's alone, so a call
        # somehow opened again (a request replayed after its tombstone) cannot make a record of another id.
        record = build_record(platform=self.namespace or "voicebot", call_id=call_id, session=session,
                              lines=lines, end_reason=reason, details=details,
                              one_record_per_call_id=self.ended_calls_kept is not None)
        for listener in self.end_listeners:
            try:
                listener(record)
            except Exception:  # one that fails must not lose the record, nor the others their news
                log.exception("an end-of-call listener failed call_id=%s", call_id)
        if self.records is None:
            return
        self.records.add(record)
        metrics.RECORDS.labels("made").inc()

    def mark_event(self, call_id: str, event_id: str) -> bool:
        """Remember an event handled outside a turn (no lock); False if it was handled before."""
        return self.store.mark_event(self.key(call_id), event_id)

    def with_channel(self, call_id: str, change: Callable[[Channel], T], *, wait: float) -> T | None:
        """Run ``change`` on the call's channel under its lock and save it; None for a call not known."""
        return self.with_call(call_id, lambda call: change(call.channel), wait=wait)

    def with_call(self, call_id: str, change: Callable[[CallContext], T], *, wait: float) -> T | None:
        """Run ``change`` on a known call under its lock, as ``attach`` runs at its start (a set-up step
        that waits for the greeting), and save it; None for a call not known."""
        with self.store.locked(self.key(call_id), wait) as record:
            session = cast("Session | None", record.data)
            if session is None:
                return None
            call = CallContext(call_id, session["channel"], record.renew, lambda: record.save(session))
            result = change(call)
            record.save(session, release=True)
            return result

    def peek(self, call_id: str) -> Session | None:
        """The call's session as stored now (read only: a change to it is not saved), without its lock."""
        return cast("Session | None", self.store.peek(self.key(call_id)))

    def channel(self, call_id: str) -> Channel | None:
        """The call's channel state as stored now, without waiting for a turn in flight."""
        session = self.store.peek(self.key(call_id))
        return None if session is None else cast(Channel, session.get("channel", {}))

    def ended(self, call_id: str) -> bool:
        return self._ended(self.key(call_id))

    def keep_alive(self, call_id: str) -> bool:
        """Restart the call's TTL: a long silence is not the end of a live call."""
        return self.store.touch(self.key(call_id))

    def remember(self, name: str, value: str) -> None:
        """A small note beside the calls (which call a platform's id belongs to), for the session TTL."""
        self.store.remember(name, value)

    def recall(self, name: str, *, refresh: bool = False) -> str | None:
        """A note kept by ``remember``; ``refresh`` restarts its TTL, as a live call's use does."""
        return self.store.recall(name, refresh=refresh)

    def _ended(self, key: str) -> bool:
        return self.store.recall(_tombstone(key)) is not None

    def _save_turn(self, record: CallRecord, session: Session, event_id: str | None, lines: list[Line],
                   said: bool) -> bool:
        try:
            record.save(session, release=True, event_id=event_id, lines=lines)
        except LockLost:
            # Another turn of the call may have run meanwhile: this one's
            # history would overwrite it, so it is dropped, and said so.
            log.error("turn not saved call_id=%s: the call's lock lease ran out during the turn",
                      session["call_id"])
            metrics.ERRORS.labels("lock_lost").inc()
            return False
        except StoreError:
            if not said:
                raise
            # The caller has heard the reply: failing the request now would
            # only make the platform deliver the event, and say it, again.
            log.exception("turn said but not saved call_id=%s", session["call_id"])
            return False
        return True


def _tombstone(key: str) -> str:
    return f"ended:{key}"

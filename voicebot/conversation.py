"""The conversation core: one isolated, serialized history per call, and its record when it ends.

It knows nothing of HTTP or of any webhook contract; each contract's views
translate their events into ``start_call``, ``take_turn`` and ``end_call``.
Each contract has a Conversation of its own, with its own ``namespace``: a
call id sent to one contract can never reach a call of another.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, TypedDict, TypeVar, cast

from . import metrics
from .config import lock_wait_seconds
from .deadline import Deadline, unbounded
from .exceptions import CallBusy, LLMError, LockLost, StoreError
from .llm import LLM, Message, Reply, ToolUse
from .operator_tools import HttpTool, ToolCall, ToolCaller, ToolResult
from .records import Outbox, build_record
from .records.record import iso
from .speakable import make_speakable
from .stores import CallRecord, SessionStore
from .tools import END_CALL, LIFECYCLE_TOOLS, TRANSFER_CALL, Action, Tool, lifecycle_prompt, lifecycle_tools

log = logging.getLogger(__name__)

T = TypeVar("T")

# A tool still working after this long makes the caller hear its filler, where the platform can say it.
FILLER_AFTER_SECONDS = 1.0


@dataclass(frozen=True)
class ConversationSettings:
    system_prompt: str
    greeting: str
    fallback_reply: str
    max_history_turns: int
    max_reply_chars: int
    llm_timeout: float
    lock_wait: float
    transfer_number: str = ""
    goodbye_line: str = "Thank you for calling. Goodbye!"
    transfer_line: str = "Please hold while I connect you with a person."
    max_tool_rounds: int = 3
    transcript_chars: int = 2000  # of a tool's answer, in the transcript

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
            transfer_number=config["TRANSFER_NUMBER"],
            goodbye_line=config["GOODBYE_LINE"],
            transfer_line=config["TRANSFER_LINE"],
            max_tool_rounds=config["MAX_TOOL_ROUNDS"],
            transcript_chars=config["MAX_TRANSCRIPT_CHARS"],
        )


@dataclass(frozen=True)
class Turn:
    reply: str
    fallback: bool = False  # the model failed and the caller hears FALLBACK_REPLY
    duplicate: bool = False  # this event was handled before; nothing was done again
    llm_seconds: float = 0.0  # time spent waiting on the model
    recorded: bool = True  # False: the call's lease ran out and the turn was not saved
    action: Action | None = None  # the model ended the call or asked for a transfer
    unsaid: str | None = None  # streamed: the part of the reply not yet said (None: all of it)
    first_sentence_seconds: float | None = None  # streamed: from asking the model to its first sentence


@dataclass
class CallContext:
    """What a contract's hook gets, under the call's lock.

    ``channel`` is the contract's own per-call state (ids on the telephony
    platform, say), saved with the session. Call ``renew`` before every step
    that may take a while (a REST request), so the lease outlives the hook; in
    ``attach`` it is a checkpoint that also saves the channel as it is now, so
    a long set-up keeps what it has done even if a later step fails.
    Otherwise a hook that raises leaves the session as it was. ``said`` puts a
    line the bot spoke into the call's transcript.
    """

    channel: dict
    renew: Callable[[], None]
    lines: list[dict] = field(default_factory=list)

    def said(self, text: str) -> None:
        self.lines.append(_line("bot", text))


Attach = Callable[[CallContext], None]
Deliver = Callable[[str, CallContext], None]
Detach = Callable[[dict], None]


class Session(TypedDict, total=False):
    """One call's session, as the store keeps it (JSON), under the call's key, for the session TTL.

    Its transcript lines are kept beside it (``SessionStore.lines``), and its
    event digests too, so neither is rewritten with every turn.
    """

    call_id: str
    caller: str | None           # the caller's number, as the platform gave it
    started_at: float            # epoch seconds
    turns: int                   # turns answered (by the model or the fallback)
    fallbacks: int               # of which the fallback line
    greeted: bool                # the greeting was given (said once, also on redeliveries)
    messages: list[Message]      # what the model sees, trimmed to MAX_HISTORY_TURNS
    actions: list[dict]          # end_call / transfer_call, as the model took them, with their time
    usage: dict[str, int]        # tokens billed over the call, by kind
    transcript_lines: int        # transcript lines added over the call (the store keeps the last ones)
    # The platform's own state of the call (VoIPBin: owner, transcribe_id,
    # speaking_id, ...); saved with the session, read by nothing else.
    channel: dict[str, Any]


def new_session(call_id: str, caller: str | None) -> Session:
    return {"call_id": call_id, "caller": caller, "started_at": time.time(), "turns": 0, "fallbacks": 0,
            "messages": [], "channel": {}, "actions": []}


def _line(speaker: str, text: str, **extra: Any) -> dict:
    return {"at": iso(time.time()), "speaker": speaker, "text": text, **extra}


class Conversation:
    """One platform's calls: each an isolated history, served one turn at a time, ended with one record.

    A platform's views hold one of these (its own ``namespace``) and speak to
    it in three verbs: ``start_call`` (the greeting), ``take_turn`` (what the
    caller said in, the reply and any action out) and ``end_call`` (the
    record). Every verb holds the call's lock from read to write, through the
    store, so two events of one call never interleave, on any worker of any
    instance; a write whose lease ran out is refused by the store (fenced by
    the lock's token). It knows no HTTP and no platform: a platform's own
    state of a call travels in the session as its ``channel``.
    """

    def __init__(self, store: SessionStore, llm: LLM, settings: ConversationSettings,
                 namespace: str = "", records: Outbox | None = None,
                 operator_tools: list[HttpTool] | None = None, tool_caller: ToolCaller | None = None,
                 ended_calls_kept: float | None = None) -> None:
        self.store = store
        # How long a call ended for good stays ended (None: the session TTL). A platform whose requests
        # carry no time (Twilio's signatures) keeps it for as long as it could still send one.
        self.ended_calls_kept = ended_calls_kept
        self.llm = llm
        self.settings = settings
        self.namespace = namespace
        self.records = records
        self.tool_caller = tool_caller
        self.tools: list[Tool] = [*lifecycle_tools(settings.transfer_number), *(operator_tools or [])]
        # The greeting was said before the first message the model sees; the
        # Messages API wants the history to open with the caller, so the
        # greeting travels in the system prompt.
        self._system = (f"{settings.system_prompt}\n\n{lifecycle_prompt(settings.transfer_number)}\n\n"
                        f'You opened this call by saying: "{settings.greeting}"')

    def key(self, call_id: str) -> str:
        """The call's name in the store, inside this contract's namespace."""
        return f"{self.namespace}:{call_id}" if self.namespace else call_id

    def _lock_wait(self, deadline: Deadline, keep: float) -> float:
        wait = deadline.cap(self.settings.lock_wait, keep=keep)
        if wait <= 0:
            raise CallBusy("no time left in this webhook's budget to wait for the call")
        return wait

    def start_call(self, call_id: str, caller: str | None = None, *, attach: Attach | None = None,
                   greet: bool = True, deadline: Deadline | None = None) -> str | None:
        """Open the call's session (a live call keeps its history) and return the greeting.

        ``attach`` may set up the call's channel first; with ``greet`` the
        greeting goes into the transcript once (the caller hears it now). None
        when the call has already ended for good (see ``end_call(final=True)``).
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
                session = new_session(call_id, caller)
                metrics.CALLS.labels("started").inc()
            elif caller and not session.get("caller"):
                session["caller"] = caller
            context = CallContext(session["channel"], lambda: record.save(session))
            if attach is not None:
                attach(context)
            if greet and not session.get("greeted"):
                session["greeted"] = True
                context.said(self.settings.greeting)
            record.save(session, release=True, lines=context.lines)
        log.info("call started call_id=%s resumed=%s lock_wait_ms=%.1f total_ms=%.1f",
                 call_id, resumed, record.lock_wait * 1000, (time.monotonic() - started) * 1000)
        return self.settings.greeting

    def take_turn(self, call_id: str, text: str, caller: str | None = None, *,
                  event_id: str | None = None, deliver: Deliver | None = None,
                  deadline: Deadline | None = None, deliver_seconds: float = 0.0,
                  allow_transfer: bool = True, say_now: Deliver | None = None, stream: bool = False,
                  interrupted: Callable[[CallContext], bool] | None = None) -> Turn | None:
        """Add what the caller said, ask the model, add and return its reply (and any action).

        The call's lock is held from read to write, so two turns of one call
        run one after the other and each sees the other's words. With
        ``event_id``, an event handled before (in the call's whole life) is
        not handled again. With ``deliver``, the reply is handed on (spoken)
        before the turn is saved, and ``deliver_seconds`` of the deadline are
        kept for it: if delivery fails, the turn is not recorded and the event
        can be retried as if it had never come. With ``say_now``, what the bot
        says while its tools work (its own words, a slow tool's filler) is said
        at once; without it, the model's words are said before the reply. With
        ``stream``, ``deliver`` gets the reply sentence by sentence as the model
        writes it, until ``interrupted`` says the caller talked over it, and at
        the end only what is left to say. If the first sentence cannot be
        delivered the turn fails as a whole reply would; a later one ends the
        reply where it is. None when the call has ended for good.
        """
        started = time.monotonic()
        deadline = deadline or unbounded()
        key = self.key(call_id)
        # The wait leaves room for at least a short model call and the delivery.
        wait = self._lock_wait(deadline, keep=deliver_seconds + min(1.0, self.settings.llm_timeout))
        with self.store.locked(key, wait, event_id) as record:
            session = cast("Session | None", record.data)
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
            tools = [t for t in self.tools if allow_transfer or t.name != TRANSFER_CALL]
            context = CallContext(session["channel"], record.renew, [_line("caller", text)])
            streaming = _Streaming(deliver, interrupted) if stream and deliver is not None else None
            turn = self._converse(session, text, tools, _Budget(deadline, deliver_seconds), context, say_now,
                                  streaming)
            context.lines.append(_line("bot", turn.reply, fallback=turn.fallback))
            if deliver is not None:
                deliver(turn.reply if turn.unsaid is None else turn.unsaid, context)
            recorded = self._save_turn(record, session, event_id, context.lines, delivered=deliver is not None)
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
        if not recorded:
            return replace(turn, recorded=False)
        return turn

    def end_call(self, call_id: str, *, reason: str = "ended", details: dict[str, Any] | None = None,
                 detach: Detach | None = None, final: bool = False, deadline: Deadline | None = None) -> bool:
        """Forget the call, after making its end-of-call record. False if it was not known.

        Without ``final`` a later event with the same id starts afresh (the
        article's contract). With it, a tombstone (an alias) stays for the
        session TTL and later events of the call are ignored: platforms whose
        call ids are never reused deliver events late and out of order, and a
        late "call answered" must not reopen a call that has hung up.
        """
        key = self.key(call_id)
        with self.store.locked(key, self._lock_wait(deadline or unbounded(), keep=0.5)) as record:
            session = cast("Session | None", record.data)
            known = session is not None
            if session is not None:
                metrics.CALLS.labels("ended").inc()
                if detach is not None:
                    detach(session["channel"])
                # Kept before it is forgotten: a crash in between makes it twice, with one id.
                self._keep_record(call_id, session, self.store.lines(key), reason, details)
            if final:
                self.store.remember(_tombstone(key), "1", seconds=self.ended_calls_kept)
            record.delete()
        log.info("call ended call_id=%s known=%s reason=%s", call_id, known, reason)
        return known

    def expired(self, key: str, session: dict, lines: list[dict]) -> None:
        """The reaper's handler: a call idle for the session TTL gets its record too."""
        call_id = key.split(":", 1)[1] if self.namespace else key
        log.info("call expired call_id=%s: no event for the session TTL", call_id)
        self._keep_record(call_id, cast(Session, session), lines, "expired", None)

    def _keep_record(self, call_id: str, session: Session, lines: list[dict], reason: str,
                     details: dict[str, Any] | None) -> None:
        if self.records is None:
            return
        # Call ids kept ended for long are never reused: the record's id is the call's alone, so a call
        # somehow opened again (a request replayed after its tombstone) cannot make a record of another id.
        self.records.add(build_record(platform=self.namespace or "voicebot", call_id=call_id, session=session,
                                      lines=lines, end_reason=reason, details=details,
                                      one_record_per_call_id=self.ended_calls_kept is not None))
        metrics.RECORDS.labels("made").inc()

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
        return self.store.recall(_tombstone(key)) is not None

    def _save_turn(self, record: CallRecord, session: Session, event_id: str | None, lines: list[dict],
                   delivered: bool) -> bool:
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
            if not delivered:
                raise
            # The caller has heard the reply: failing the request now would
            # only make the platform deliver the event, and say it, again.
            log.exception("turn said but not saved call_id=%s", session["call_id"])
            return False
        return True

    def _converse(self, session: Session, text: str, tools: list[Tool], budget: "_Budget", context: CallContext,
                  say_now: Deliver | None, streaming: "_Streaming | None" = None) -> Turn:
        """Ask the model; run the operator's tools it uses, a bounded number of rounds; shape the reply."""
        history: list[Message] = session["messages"]
        _add_caller_words(history, text)
        asked = time.monotonic()
        offered = {t.name: t for t in tools}
        said_first: list[str] = []  # words for before the reply, where they could not be said at once
        answer: Reply | None = None
        for rounds_left in range(self.settings.max_tool_rounds, -1, -1):
            context.renew()
            streamed: list[str] = []
            try:
                # The last round must speak: tools stay defined (the history names them), not usable.
                timeout = budget.for_model(self.settings.llm_timeout)
                if streaming is None:
                    answer = self.llm.reply(self._system, history, timeout, tools, allow_tools=rounds_left > 0)
                else:
                    answer = self.llm.stream_reply(self._system, history, timeout,
                                                   streaming.sayer(self, context, streamed, asked), tools,
                                                   allow_tools=rounds_left > 0)
            except LLMError as exc:
                log.warning("llm failed call_id=%s error=%s: %s", session["call_id"], type(exc).__name__, exc)
                if streamed:  # what was said stays said, and is the reply: no fallback after it
                    answer = Reply(" ".join(streamed))
                    break
                metrics.FALLBACKS.labels(type(exc).__name__).inc()
                answer = None
                break
            _count_usage(session, answer.usage)
            lookups = [u for u in answer.tool_uses if isinstance(offered.get(u.name), HttpTool)]
            if not lookups or rounds_left == 0 or any(u.name in LIFECYCLE_TOOLS for u in answer.tool_uses):
                break
            words = " ".join(streamed) or make_speakable(answer.text, self.settings.max_reply_chars)
            history.append({"role": "assistant", "content": [*([{"type": "text", "text": words}] if words else []),
                                                             *(u.block() for u in answer.tool_uses)]})
            if streamed:
                context.said(words)
            elif words:
                self._say_meanwhile(words, context, say_now, said_first)
            history.append({"role": "user", "content": self._use_tools(session, answer.tool_uses, offered, budget,
                                                                       context, say_now)})
            answer = None
        turn = self._reply(session, history, answer, offered, said_first, time.monotonic() - asked, streamed)
        return replace(turn, first_sentence_seconds=streaming.first_sentence) if streaming else turn

    def _say_meanwhile(self, words: str, context: CallContext, say_now: Deliver | None,
                       said_first: list[str]) -> None:
        if say_now is None:
            said_first.append(words)
            return
        context.renew()
        say_now(words, context)
        context.said(words)

    def _use_tools(self, session: Session, uses: list[ToolUse], offered: dict[str, Tool], budget: "_Budget",
                   context: CallContext, say_now: Deliver | None) -> list[dict]:
        """Call the operator's tools the model asked for (at once, in parallel); their tool_result blocks."""
        pending: dict[str, tuple[HttpTool, ToolCall]] = {}
        for use in uses:
            tool = offered.get(use.name)
            if isinstance(tool, HttpTool) and self.tool_caller is not None:
                pending[use.id] = (tool, self.tool_caller.start(
                    tool, use.id, use.input, call_id=session["call_id"], platform=self.namespace or "voicebot",
                    caller=session.get("caller"), timeout=budget.for_tool(tool.timeout, self.settings.llm_timeout)))
        fillers = [tool.filler for tool, _ in pending.values() if tool.filler]
        if fillers and say_now is not None and not _all_done(pending, FILLER_AFTER_SECONDS):
            self._say_meanwhile(fillers[0], context, say_now, [])
        blocks = []
        for use in uses:
            if use.id in pending:
                tool, call = pending[use.id]
                # The call keeps its own deadline; this wait only guards against a worker thread that stalls.
                result = call.result(timeout=budget.for_tool(tool.timeout, self.settings.llm_timeout) + 0.5)
            else:
                result = ToolResult(f"There is no tool {use.name} to use now.", True)
            # The model gets the whole answer; the transcript, kept for the record, its first part.
            context.lines.append(_line("tool", result.content[:self.settings.transcript_chars], tool=use.name,
                                       input=use.input, is_error=result.is_error))
            blocks.append(result.block(use.id))
        context.renew()
        return blocks

    def _reply(self, session: Session, history: list[Message], answer: Reply | None, offered: dict[str, Tool],
               said_first: list[str], llm_seconds: float, streamed: list[str]) -> Turn:
        """The words the caller hears and the call action, recorded in the history."""
        answer = answer or Reply("")
        reply = " ".join(streamed) or make_speakable(answer.text, self.settings.max_reply_chars)
        action, results = None, []
        for use in answer.tool_uses:
            if use.name == END_CALL and END_CALL in offered and action is None:
                action = Action("hangup", reason=str(use.input.get("reason", ""))[:200])
                result = "The call ends once your goodbye has been heard."
            elif use.name == TRANSFER_CALL and TRANSFER_CALL in offered and action is None:
                action = Action("transfer", to=self.settings.transfer_number,
                                reason=str(use.input.get("reason", ""))[:200])
                result = "The caller is being connected to a person."
            else:
                result = f"{use.name} was not done: only one call action per reply, and no tools after the last round."
            results.append({"type": "tool_result", "tool_use_id": use.id, "content": result})
        fallback = not reply and action is None
        if fallback:
            if not answer.tool_uses and answer.text:
                log.warning("llm gave nothing speakable call_id=%s", session["call_id"])
                metrics.FALLBACKS.labels("unspeakable").inc()
            reply = self.settings.fallback_reply
            session["fallbacks"] = session.get("fallbacks", 0) + 1
        elif not reply and action is not None:
            reply = self.settings.goodbye_line if action.type == "hangup" else self.settings.transfer_line
        # What the caller heard goes into the history, fallback included, so
        # the roles keep alternating and the model knows what was said; a
        # tool_use is always answered by its tool_result.
        if answer.tool_uses:
            history.append({"role": "assistant",
                            "content": [{"type": "text", "text": reply}, *(u.block() for u in answer.tool_uses)]})
            history.append({"role": "user", "content": results})
        else:
            history.append({"role": "assistant", "content": reply})
        _trim(history, 2 * self.settings.max_history_turns)
        session["turns"] += 1
        if action is not None:
            session.setdefault("actions", []).append({"at": iso(time.time()), **action.as_dict(),
                                                      "reason": action.reason})
        # Streamed words are said; a goodbye or hold line standing in for none is not yet.
        unsaid = None if not streamed else ""
        return Turn(" ".join([*said_first, reply]), fallback, llm_seconds=llm_seconds, action=action, unsaid=unsaid)


@dataclass
class _Streaming:
    """Saying a reply as the model writes it: each run of whole sentences at once, until the caller talks."""

    deliver: Deliver
    interrupted: Callable[[CallContext], bool] | None
    first_sentence: float | None = None  # seconds from asking the model to its first sentence

    def sayer(self, conversation: "Conversation", context: CallContext, streamed: list[str],
              asked: float) -> Callable[[str], bool]:
        limit = conversation.settings.max_reply_chars

        def say(text: str) -> bool:
            if self.first_sentence is None:
                self.first_sentence = time.monotonic() - asked
            if self.interrupted is not None and self.interrupted(context):
                return False  # the caller is talking: what is queued was flushed, and no more is said
            left = limit - sum(len(s) + 1 for s in streamed)
            if left <= 0:
                return False
            whole = make_speakable(text, 1 << 20)
            if not whole:
                return True  # nothing speakable in it (an emoji, a link): wait for more
            words = whole if len(whole) <= left else make_speakable(whole, left)
            try:
                self.deliver(words, context)
            except Exception as exc:
                if not streamed:
                    raise  # nothing was heard: the turn fails, and the platform may send it again
                log.warning("streamed reply cut short: %s: %s", type(exc).__name__, exc)
                return False
            streamed.append(words)
            # Past MAX_REPLY_CHARS the reply is cut here, at a sentence end, as a whole reply would be.
            return words == whole

        return say


@dataclass(frozen=True)
class _Budget:
    """A turn's deadline, with the time its delivery needs kept back."""

    deadline: Deadline
    deliver_seconds: float

    def for_model(self, llm_timeout: float) -> float:
        return self.deadline.cap(llm_timeout, keep=self.deliver_seconds)

    def for_tool(self, tool_timeout: float, llm_timeout: float) -> float:
        # Room is left for the model to speak about the answer, and for the delivery.
        return self.deadline.cap(tool_timeout, keep=self.deliver_seconds + min(2.0, llm_timeout))


def _all_done(pending: dict[str, tuple[HttpTool, ToolCall]], wait: float) -> bool:
    deadline = time.monotonic() + wait
    return all(call.wait(deadline - time.monotonic()) for _, call in pending.values())


def _count_usage(session: Session, usage: dict[str, int]) -> None:
    """The call's token bill, for its record and /metrics."""
    if not usage:
        return
    total = session.setdefault("usage", {})
    for kind, tokens in usage.items():
        total[kind] = total.get(kind, 0) + tokens
        metrics.LLM_TOKENS.labels(kind).inc(tokens)


def _add_caller_words(history: list[Message], text: str) -> None:
    """A new user message, or the words added after the tool results the last one holds."""
    if history and history[-1]["role"] == "user" and isinstance(history[-1]["content"], list):
        history[-1]["content"].append({"type": "text", "text": text})
    else:
        history.append({"role": "user", "content": text})


def _trim(history: list[Message], keep: int) -> None:
    """Keep about the last ``keep`` messages, opening with the caller and no orphaned tool_result."""
    del history[: max(0, len(history) - keep)]
    while history:
        first = history[0]
        if first["role"] != "user":
            del history[0]
            continue
        if isinstance(first["content"], list):
            words = [b for b in first["content"] if b.get("type") != "tool_result"]
            if not words:
                del history[0]
                continue
            first["content"] = words
        break


def _tombstone(key: str) -> str:
    return f"ended:{key}"

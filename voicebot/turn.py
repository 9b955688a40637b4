"""The turn engine: what the caller said in, the model's reply (and any call action) out.

It asks the model, runs the operator's tools the model uses (a bounded
number of rounds, with a filler line while a slow one works), streams the
reply through the platform's speaker where it can, and keeps the turn within
its budget. It knows no store and no lock: ``Conversation`` holds the call's
lock around it and saves what it changed.
"""

from __future__ import annotations

import enum
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Mapping

from . import metrics
from .deadline import Deadline
from .exceptions import LLMError
from .llm import LLM, Message, Reply, ToolUse
from .operator_tools import HttpTool, ToolCall, ToolCaller, ToolResult
from .clock import iso
from .session import CallContext, ConversationSettings, Session, call_variables, line
from .speakable import make_speakable, speakable_piece
from .speaker import Speaker
from .tools import END_CALL, LIFECYCLE_TOOLS, TRANSFER_CALL, Action, Tool

log = logging.getLogger(__name__)

# A tool still working after this long makes the caller hear its filler, where the platform can say it.
FILLER_AFTER_SECONDS = 1.0


class Outcome(enum.Enum):
    """What became of a turn: answered, a duplicate of one handled before, or a call that has ended."""

    ANSWERED = "answered"      # the model's reply, or the fallback line
    DUPLICATE = "duplicate"    # this event was handled before: nothing was done again
    CALL_ENDED = "call_ended"  # the call has ended for good: nothing was done


@dataclass(frozen=True)
class Turn:
    """What one turn did, in one type every platform reads the same way.

    ``reply``: every word the caller hears this turn (for a duplicate, the
    reply saved for that event, or "" when it is not the last one).
    ``unsaid``: what was left to say when the model was done, handed to the
    speaker's ``deliver`` (all of it unless the reply was streamed).
    ``fallback``: the model failed and the caller hears FALLBACK_REPLY.
    ``saved``: False when the turn could not be saved (the call's lease ran
    out, or the store failed after the caller heard it); its action is not
    taken then. ``action``: the model ended the call or asked for a person.
    """

    outcome: Outcome
    reply: str = ""
    unsaid: str = ""
    fallback: bool = False
    saved: bool = True
    action: Action | None = None
    llm_seconds: float = 0.0  # time spent waiting on the model
    first_sentence_seconds: float | None = None  # streamed: from asking the model to its first sentence
    tools: tuple[str, ...] = ()  # the operator's tools the model used this turn, in order
    usage: Mapping[str, int] = field(default_factory=dict)  # tokens this turn billed, by kind (as Reply.usage)
    failure: str | None = None  # what failed when the model did (LLMTimeout...): the record's transcript says it

    @property
    def answered(self) -> bool:
        return self.outcome is Outcome.ANSWERED

    @classmethod
    def duplicate(cls, reply: str) -> "Turn":
        return cls(Outcome.DUPLICATE, reply)

    @classmethod
    def call_ended(cls) -> "Turn":
        return cls(Outcome.CALL_ENDED)


@dataclass(frozen=True)
class Budget:
    """A turn's deadline, with the time its delivery needs kept back."""

    deadline: Deadline
    deliver_seconds: float

    def for_model(self, llm_timeout: float) -> float:
        return self.deadline.cap(llm_timeout, keep=self.deliver_seconds)

    def for_tool(self, tool_timeout: float, llm_timeout: float) -> float:
        # Room is left for the model to speak about the answer, and for the delivery.
        return self.deadline.cap(tool_timeout, keep=self.deliver_seconds + min(2.0, llm_timeout))


class TurnEngine:
    """The model, the tools, streaming and the budget of one turn; shared by every call of a platform."""

    def __init__(self, llm: LLM, settings: ConversationSettings, platform: str,
                 tool_caller: ToolCaller | None) -> None:
        self.llm = llm
        self.settings = settings
        self.platform = platform
        self.tool_caller = tool_caller

    def run(self, session: Session, text: str, tools: list[Tool], budget: Budget, call: CallContext,
            speaker: Speaker, system: str) -> Turn:
        """Ask the model (``system`` is the call's prompt); run the operator's tools it uses, a bounded
        number of rounds; shape the reply."""
        history: list[Message] = session["messages"]
        _add_caller_words(history, text)
        asked = time.monotonic()
        offered = {t.name: t for t in tools}
        said_first: list[str] = []  # words for before the reply, where they could not be said at once
        streaming = _Streaming(speaker, call, self.settings.max_reply_chars, asked) \
            if speaker.streams and speaker.says_at_once else None
        answer: Reply | None = None
        used: list[str] = []
        billed: dict[str, int] = {}
        failure: str | None = None
        for rounds_left in range(self.settings.max_tool_rounds, -1, -1):
            call.extend_lease()
            if streaming is not None:
                streaming.said.clear()
            try:
                # The last round must speak: tools stay defined (the history names them), not usable.
                timeout = budget.for_model(self.settings.llm_timeout)
                if streaming is None:
                    answer = self.llm.reply(system, history, timeout, tools, allow_tools=rounds_left > 0)
                else:
                    answer = self.llm.stream_reply(system, history, timeout, streaming.say, tools,
                                                   allow_tools=rounds_left > 0, as_written=speaker.says_pieces)
            except LLMError as exc:
                log.warning("llm failed call_id=%s error=%s: %s", session["call_id"], type(exc).__name__, exc)
                failure = type(exc).__name__
                if streaming is not None and streaming.said:  # what was said stays said: no fallback after it
                    answer = Reply(streaming.words())
                    break
                metrics.FALLBACKS.labels(type(exc).__name__).inc()
                answer = None
                break
            _count_usage(session, answer.usage)
            for kind, tokens in answer.usage.items():
                billed[kind] = billed.get(kind, 0) + tokens
            lookups = [u for u in answer.tool_uses if isinstance(offered.get(u.name), HttpTool)]
            if not lookups or rounds_left == 0 or any(u.name in LIFECYCLE_TOOLS for u in answer.tool_uses):
                break
            streamed = [streaming.words()] if streaming is not None and streaming.said else []
            words = " ".join(streamed) or make_speakable(answer.text, self.settings.max_reply_chars)
            history.append({"role": "assistant", "content": [*([{"type": "text", "text": words}] if words else []),
                                                             *(u.block() for u in answer.tool_uses)]})
            if streamed:
                call.said(words)
            elif words:
                self._say_meanwhile(words, call, speaker, said_first)
            used += [u.name for u in lookups]
            history.append({"role": "user", "content": self._use_tools(session, answer.tool_uses, offered, budget,
                                                                       call, speaker)})
            answer = None
        streamed = [streaming.words()] if streaming is not None and streaming.said else []
        turn = replace(self._reply(session, history, answer, offered, said_first, time.monotonic() - asked, streamed),
                       tools=tuple(used), usage=billed, failure=failure)
        return replace(turn, first_sentence_seconds=streaming.first_sentence) if streaming else turn

    def _say_meanwhile(self, words: str, call: CallContext, speaker: Speaker, said_first: list[str]) -> None:
        if not speaker.says_at_once:
            said_first.append(words)
            return
        call.extend_lease()
        speaker.say_meanwhile(words, call)
        call.said(words)

    def _use_tools(self, session: Session, uses: list[ToolUse], offered: dict[str, Tool], budget: Budget,
                   call: CallContext, speaker: Speaker) -> list[dict[str, object]]:
        """Call the operator's tools the model asked for (at once, in parallel); their tool_result blocks."""
        pending: dict[str, tuple[HttpTool, ToolCall]] = {}
        for use in uses:
            tool = offered.get(use.name)
            if isinstance(tool, HttpTool) and self.tool_caller is not None:
                pending[use.id] = (tool, self.tool_caller.start(
                    tool, use.id, use.input, call_id=session["call_id"], platform=self.platform,
                    caller=session.get("caller"), variables=call_variables(session), context=session.get("context"),
                    timeout=budget.for_tool(tool.timeout, self.settings.llm_timeout)))
        fillers = [tool.filler for tool, _ in pending.values() if tool.filler]
        if fillers and speaker.says_at_once and not _all_done(pending, FILLER_AFTER_SECONDS):
            self._say_meanwhile(fillers[0], call, speaker, [])
        blocks = []
        for use in uses:
            if use.id in pending:
                tool, tool_call = pending[use.id]
                # The call keeps its own deadline; this wait only guards against a worker thread that stalls.
                result = tool_call.result(timeout=budget.for_tool(tool.timeout, self.settings.llm_timeout) + 0.5)
            else:
                result = ToolResult(f"There is no tool {use.name} to use now.", True)
            # The model gets the whole answer; the transcript, kept for the record, its first part.
            call.lines.append(line("tool", result.content[:self.settings.transcript_chars], tool=use.name,
                                   input=use.input, is_error=result.is_error))
            blocks.append(result.block(use.id))
        call.extend_lease()
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
        whole = " ".join([*said_first, reply])
        # Streamed words are said; a goodbye or hold line standing in for none is not yet.
        return Turn(Outcome.ANSWERED, whole, unsaid="" if streamed else whole, fallback=fallback,
                    llm_seconds=llm_seconds, action=action)


class _Streaming:
    """Saying a reply as the model writes it: each run of whole sentences at once, until the caller talks."""

    def __init__(self, speaker: Speaker, call: CallContext, limit: int, asked: float) -> None:
        self.speaker, self.call, self.limit, self.asked = speaker, call, limit, asked
        self.said: list[str] = []  # this round's sentences, as said
        self.first_sentence: float | None = None  # seconds from asking the model to its first sentence

    def say(self, text: str) -> bool:
        """The model wrote ``text`` (whole sentences): False when no more of the reply is to be said."""
        if self.first_sentence is None:
            self.first_sentence = time.monotonic() - self.asked
        if self.speaker.stop_saying(self.call):
            return False  # the caller is talking: what is queued was flushed, and no more is said
        if self.speaker.says_pieces:
            return self._say_piece(text)
        left = self.limit - sum(len(s) + 1 for s in self.said)
        if left <= 0:
            return False
        whole = make_speakable(text, 1 << 20)
        if not whole:
            return True  # nothing speakable in it (an emoji, a link): wait for more
        words = whole if len(whole) <= left else make_speakable(whole, left)
        try:
            self.speaker.say(words, self.call)
        except Exception as exc:
            if not self.said:
                raise  # nothing was heard: the turn fails, and the platform may send it again
            log.warning("streamed reply cut short: %s: %s", type(exc).__name__, exc)
            return False
        self.said.append(words)
        # Past MAX_REPLY_CHARS the reply is cut here, at a sentence end, as a whole reply would be.
        return words == whole

    def _say_piece(self, text: str) -> bool:
        """As the model wrote it, mid-sentence too; past MAX_REPLY_CHARS cut where the limit falls."""
        left = self.limit - len(self.words())
        piece = speakable_piece(text)
        if left <= 0 or not piece:
            return left > 0
        words = piece[:left]
        try:
            self.speaker.say_piece(words, self.call)
        except Exception as exc:
            if not self.said:
                raise
            log.warning("streamed reply cut short: %s: %s", type(exc).__name__, exc)
            return False
        self.said.append(words)
        return words == piece

    def words(self) -> str:
        """This round's words as said: sentences spaced, pieces joined as written."""
        return "".join(self.said).strip() if self.speaker.says_pieces else " ".join(self.said)


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
    last = history[-1] if history else None
    if last is not None and last["role"] == "user" and isinstance(last["content"], list):
        last["content"].append({"type": "text", "text": text})
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

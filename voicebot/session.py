"""What every layer shares about one call: its settings, its stored session, and the handle a verb gets.

Below both the call's lifecycle (``conversation``) and the turn engine
(``turn``), so neither imports the other for these.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, TypedDict

from .config import lock_wait_seconds
from .context import KeptContext
from .llm import Message
from .clock import iso


class _LineBase(TypedDict):
    at: str       # when it was said, UTC (``voicebot.clock.iso``)
    speaker: str  # "caller", "bot" or "tool"
    text: str


class Line(_LineBase, total=False):
    """One line of a call's transcript, as its record keeps it."""

    interrupted: bool  # a bot line the caller talked over: ``text`` is what they heard
    fallback: bool     # the bot's line was FALLBACK_REPLY (the model failed or ran late)
    error: str         # what failed when the model did (LLMTimeout, LLMUnavailable): the fallback, or a cut reply
    tool: str          # a tool's line: the tool's name, what the model gave it, and whether it failed
    input: Any
    is_error: bool


# A platform's own state of a call, saved with its session. The core never reads into it: each platform
# reads it through a TypedDict of its own (VoipbinChannel, the Twilio Gather loop's GatherChannel).
Channel = dict[str, Any]


@dataclass(frozen=True)
class ConversationSettings:
    """The settings every call's conversation reads, taken from the registry once at start-up."""

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
    # A call voicebot placed opens differently: its own greeting and prompt, and what a voicemail hears.
    outbound_greeting: str = "Hello, this is an automated assistant calling. Is now a good time to talk?"
    outbound_system_prompt: str = ""
    voicemail_message: str = ""

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
            outbound_greeting=config.get("OUTBOUND_GREETING", cls.outbound_greeting),
            outbound_system_prompt=config.get("OUTBOUND_SYSTEM_PROMPT", ""),
            voicemail_message=config.get("VOICEMAIL_MESSAGE", ""),
        )

    def greeting_of(self, direction: str) -> str:
        return self.outbound_greeting if direction == "outbound" else self.greeting

    def system_prompt_of(self, direction: str) -> str:
        return (self.outbound_system_prompt or self.system_prompt) if direction == "outbound" else self.system_prompt


class LastTurn(TypedDict):
    """The last turn's event id and reply: a redelivered event is answered with it."""

    event_id: str
    reply: str


class Session(TypedDict, total=False):
    """One call's session, as the store keeps it (JSON), under the call's key, for the session TTL.

    Its transcript lines are kept beside it (``SessionStore.lines``), and its
    event digests too, so neither is rewritten with every turn.
    """

    call_id: str
    caller: str | None           # the caller's number, as the platform gave it (outbound: the number called)
    called: str | None           # the number the call reached (outbound: voicebot's own)
    direction: str               # "inbound" or "outbound"
    variables: dict[str, str]    # the call's own variables (an outbound call's contact), for {{placeholders}}
    context: KeptContext         # what CONTEXT_URL said of the call (asked once, as it started)
    started_at: float            # epoch seconds
    turns: int                   # turns answered (by the model or the fallback)
    fallbacks: int               # of which the fallback line
    greeted: bool                # the greeting was given (said once, also on redeliveries)
    messages: list[Message]      # what the model sees, trimmed to MAX_HISTORY_TURNS
    actions: list[dict[str, Any]]  # end_call / transfer_call, as the model took them, with their time
    usage: dict[str, int]        # tokens billed over the call, by kind
    transcript_lines: int        # transcript lines added over the call (the store keeps the last ones)
    last_turn: LastTurn          # the last turn sent with an event id, and its reply: a redelivery gets it again
    outcome: str                 # outbound: how the call went (human, voicemail), once it is known
    campaign_id: str             # outbound: the campaign that placed it
    leave_voicemail: bool        # outbound: False when a machine is to be hung up on, not left a message
    # The platform's own state of the call (VoIPBin: its transcribe and
    # speaking ids, ...); saved with the session, read by nothing else.
    channel: Channel


def new_session(call_id: str, caller: str | None, *, called: str | None = None, direction: str = "inbound",
                variables: dict[str, str] | None = None) -> Session:
    session: Session = {"call_id": call_id, "caller": caller, "started_at": time.time(), "turns": 0,
                        "fallbacks": 0, "messages": [], "channel": {}, "actions": []}
    if called:
        session["called"] = called
    if direction != "inbound":
        session["direction"] = direction
    if variables:
        session["variables"] = dict(variables)
    return session


def call_variables(session: Session) -> dict[str, str]:
    """The values the call's placeholders are filled with: its own variables, and what its context added."""
    context = session.get("context")
    own = session.get("variables") or {}
    return {**own, **context["variables"]} if context and context["variables"] else dict(own)


def line(speaker: str, text: str, **extra: Any) -> Line:
    """A transcript line said now; ``extra`` are the optional fields of ``Line``."""
    said: Line = {"at": iso(time.time()), "speaker": speaker, "text": text}
    said.update(extra)  # type: ignore[typeddict-item]
    return said


@dataclass
class CallContext:
    """One call, as a platform's code sees it inside a verb, under the call's lock.

    ``channel`` is the platform's own per-call state, saved with the session.
    Call ``extend_lease`` before every step that may take a while (a REST
    request), so the lock outlives the step. ``checkpoint`` (while a call is
    set up only) also saves the channel as it is now, so a long set-up keeps
    what it has done even if a later step fails; a turn has none, since it is
    saved whole or not at all. ``said`` puts a line the bot spoke into the
    call's transcript.
    """

    call_id: str
    channel: Channel
    extend_lease: Callable[[], None]
    checkpoint: Callable[[], None] | None = None
    lines: list[Line] = field(default_factory=list)

    def said(self, text: str) -> None:
        self.lines.append(line("bot", text))

    def step(self) -> None:
        """Before a step that takes a while: a checkpoint where there is one, else the lease extended."""
        (self.checkpoint or self.extend_lease)()

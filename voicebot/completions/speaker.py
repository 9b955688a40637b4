"""A Chat Completions answer as a call's speaker: what the turn says goes out as the response's deltas.

The turn runs on a thread of its own while the view's generator sends what it says as it is said:
what each read of the model's stream brings is a text delta (the front end makes its own sentences),
and voicebot's hang-up or hand-off is a call to the platform's own tool (``Dialect.tool_for``), sent
once the turn is saved. A client that goes away (the platform cancelled the request: the caller spoke
again) stops the reply, as a barge-in does.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

from ..speaker import Speaker
from ..tools import Action

if TYPE_CHECKING:
    from ..session import CallContext


@dataclass(frozen=True)
class Words:
    """Words the caller hears: whole (a greeting, a sentence run) or a ``piece`` of one, its spacing its own."""

    text: str
    piece: bool = False

    def after(self, said: "Words | None") -> str:
        """This text as the next delta after ``said``: spaced from it, unless both are pieces of one reply."""
        if said is None or (self.piece and said.piece) or said.text[-1:].isspace() or self.text[:1].isspace():
            return self.text
        return " " + self.text


@dataclass(frozen=True)
class Act:
    action: Action


@dataclass(frozen=True)
class Done:
    """The turn is over: ``tokens`` it billed, and whether its words are FALLBACK_REPLY."""

    tokens: dict[str, int]
    fallback: bool = False


class Failed:
    """The turn failed (a store error, the call busy): before any words, the request gets the error's status."""

    def __init__(self, error: Exception) -> None:
        self.error = error


Said = Union[Words, Act, Done, Failed]


class ClientGone(Exception):
    """The platform stopped reading the answer before the turn said its first words."""


class AnswerSpeaker(Speaker):
    """Hands what the turn says to the response, as it is said; ``can_transfer``: the request offers the
    platform's own hand-off tool (the model is offered transfer_call only then)."""

    says_at_once = True
    streams = True
    says_pieces = True  # the front end makes its own sentences for its speech: each word goes at once

    def __init__(self, can_transfer: bool) -> None:
        self.can_transfer = can_transfer
        self.said: "queue.SimpleQueue[Said]" = queue.SimpleQueue()
        self.gone = threading.Event()

    def say(self, text: str, call: "CallContext") -> None:
        if self.gone.is_set():
            raise ClientGone("the platform stopped reading the answer")
        self.said.put(Words(text))

    def say_piece(self, text: str, call: "CallContext") -> None:
        if self.gone.is_set():
            raise ClientGone("the platform stopped reading the answer")
        self.said.put(Words(text, piece=True))

    def say_meanwhile(self, text: str, call: "CallContext") -> None:
        if not self.gone.is_set():
            self.said.put(Words(text))

    def stop_saying(self, call: "CallContext") -> bool:
        return self.gone.is_set()

    def deliver(self, unsaid: str, call: "CallContext") -> None:
        if unsaid:
            self.say(unsaid, call)

    def can_hand_off(self, call: "CallContext") -> bool:
        return self.can_transfer

    def act(self, action: Action, call_id: str) -> bool:
        # The platform's tool call ends the answer; the bot's part of the call, and its record, end now.
        self.said.put(Act(action))
        return True

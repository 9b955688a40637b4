"""What a platform does for a call, as the conversation core asks it: one interface every platform implements.

Modelled on livekit-agents' ``AudioOutput`` and httpx's transports: the core
holds a ``Speaker`` and never knows which platform is behind it. A platform
makes one per event (it may hold that event's deadline and ids) and hands it
to ``Conversation.start_call`` or ``take_turn``.

Two kinds exist today. A platform that speaks through its own REST API while
the turn runs (VoIPBin) says words at once, and may stream a reply sentence by
sentence as the model writes it. A platform whose reply travels back in the
webhook's response (the article's contract, Twilio's Gather loop) says
nothing at once: what the bot says meanwhile goes before the reply, and the
view puts the turn's words in its response (``ResponseSpeaker``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .session import CallContext
    from .tools import Action


class Speaker(ABC):
    """A call's mouth and hands on its platform.

    ``says_at_once``: ``say`` is heard now (a filler while a tool works);
    otherwise such words go before the reply. ``streams``: with
    ``says_at_once``, the reply is said sentence by sentence as the model
    writes it; with ``says_pieces`` too, word by word as each read of the
    model's stream brings them (``say_piece``: a front end that makes its own
    sentences for its speech). ``reserve_seconds``: of a turn's budget, kept
    back for ``deliver``.
    """

    says_at_once: bool = False
    streams: bool = False
    says_pieces: bool = False
    reserve_seconds: float = 0.0

    def say(self, text: str, call: "CallContext") -> None:
        """Say ``text`` now (the greeting, a filler, a streamed sentence), under the call's lock."""
        raise NotImplementedError(f"{type(self).__name__} cannot say words before the turn's response")

    def say_piece(self, text: str, call: "CallContext") -> None:
        """A piece of the reply as the model wrote it, its own spacing kept (``says_pieces``)."""
        self.say(text, call)

    def say_meanwhile(self, text: str, call: "CallContext") -> None:
        """Words while the model's tools work ("let me check", a slow tool's filler): said at once if they can be.

        What follows does not depend on them, so a platform may let them go
        unsaid rather than fail the turn.
        """
        self.say(text, call)

    @abstractmethod
    def deliver(self, unsaid: str, call: "CallContext") -> None:
        """The turn's end, before it is saved: say what is left of the reply ("" when all was streamed).

        Raising here means the turn is not saved: the platform may send the
        event again, as if it had never come.
        """

    def stop_saying(self, call: "CallContext") -> bool:
        """Barge-in, asked before each streamed sentence: True when the caller talked over the bot.

        What is queued has then been dropped, and no more of the reply is said.
        """
        return False

    def can_hand_off(self, call: "CallContext") -> bool:
        """Whether the model may hand this call to a person now (offered only where TRANSFER_NUMBER is set)."""
        return True

    @abstractmethod
    def act(self, action: "Action", call_id: str) -> bool:
        """Hang up once the last words are heard, or hand the caller to ``action.to``.

        Called after the turn is saved and its lock let go. True when the
        bot's part of the call, and its record, end now; False when the
        platform will say so itself (a hang-up event).
        """


class Dialler(ABC):
    """What a platform does to start a call: place it, and hand it to its Conversation when answered."""

    platform: str  # the platform's name, as POST /calls and the records say it

    @abstractmethod
    def place_call(self, to: str, variables: dict[str, str], *, campaign_id: str | None = None,
                   leave_voicemail: bool = True) -> str:
        """Call ``to`` from OUTBOUND_NUMBER, its session opened with ``variables``; the platform's call id.

        ``leave_voicemail``: an answering machine gets VOICEMAIL_MESSAGE (where the platform can), or is hung
        up on at once.

        Raises the platform's errors (``PlatformError`` and kin) when it refuses or cannot be reached.
        """


class ResponseSpeaker(Speaker):
    """A platform whose reply travels back in the webhook's response: the view says it, nobody else.

    The bot's part ends with the response that says its goodbye or hand-off
    line, so ``act`` ends the call's record at once.
    """

    def deliver(self, unsaid: str, call: "CallContext") -> None:
        return None

    def act(self, action: "Action", call_id: str) -> bool:
        return True

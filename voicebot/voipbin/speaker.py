"""Speaking into a VoIPBin call: a speaking session, its ``say`` and ``flush``, hang-up and hand-off.

``VoipbinSpeech`` is shared by every call of the app (the client, the voice,
the clock); ``VoipbinSpeaker`` is the conversation core's ``Speaker`` for one
event of one call, holding that event's deadline.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from ..deadline import Deadline
from ..session import CallContext
from ..speaker import Speaker
from ..tools import Action
from .channel import VoipbinChannel, voipbin_channel
from .client import VoipbinClient
from .exceptions import VoipbinError, VoipbinRateLimited, VoipbinRejected, VoipbinUnavailable

if TYPE_CHECKING:
    from ..conversation import Conversation
    from .settings import VoipbinSettings

log = logging.getLogger(__name__)

T = TypeVar("T")
Step = Callable[[], None]

# How fast TTS speaks, to tell whether the bot is still talking when the
# caller starts to (no "speaking finished" event reaches the webhook).
SPEECH_CHARS_PER_SECOND = 15.0
# After the last word of a goodbye the line stays open this long before it is hung up.
AFTER_LAST_WORD = 0.5
# Kept of the webhook's budget for a hang-up or stop request after waiting for speech to end.
HANGUP_SECONDS = 2.0


def barge_in_marker(call_id: str) -> str:
    return f"voipbin:barge-in:{call_id}"


def adopt_if_done(attempt: Callable[[], T], find: Callable[[], T | None], step: Step) -> T:
    """Do ``attempt``; if its answer was lost but it may have happened, what ``find`` finds it made.

    A read timeout or a 5xx may come after VoIPBin did what was asked (a
    second active speaking session is even refused with a 500): doing it
    again could do it twice, so what is there is adopted. Nothing found, the
    failure stands; a 429 did nothing, and is not looked into.
    """
    try:
        return attempt()
    except VoipbinRateLimited:
        raise
    except VoipbinUnavailable as exc:
        if not exc.maybe_done:
            raise
        step()
        found = find()
        if found is None:
            raise
        return found


def quietly(action: Callable[[], None], call_id: str) -> None:
    """Clean-up that may fail: VoIPBin ends a call's transcribe and speaking with the call anyway."""
    try:
        action()
    except VoipbinError as exc:
        log.warning("clean-up failed call_id=%s: %s", call_id, exc)


class VoipbinSpeech:
    """Speaking sessions of every call: opened once per call, replaced when dead, never said twice."""

    def __init__(self, client: VoipbinClient, settings: "VoipbinSettings",
                 clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.settings = settings
        self.clock = clock
        self.speech_rate = SPEECH_CHARS_PER_SECOND
        # Kept out of the model's share of a turn's budget: one say.
        self.say_seconds = client.connect_timeout + client.read_timeout

    def ensure_speaking(self, call_id: str, channel: VoipbinChannel, step: Step, deadline: Deadline, *,
                        dead: str = "") -> str:
        """The call's speaking session: the one it has, or a new one (adopted if its answer was lost)."""
        speaking_id = channel.get("speaking_id")
        if speaking_id:
            return speaking_id
        step()
        speaking_id = adopt_if_done(
            lambda: self.client.start_speaking(call_id, self.settings.language, self.settings.tts_provider,
                                               self.settings.voice_id, deadline=deadline),
            lambda: self._find_speaking(call_id, deadline, dead), step)
        channel["speaking_id"] = speaking_id
        return speaking_id

    def _find_speaking(self, call_id: str, deadline: Deadline, dead: str) -> str | None:
        live = [s for s in self.client.speakings_of(call_id, deadline=deadline)
                if s.get("status") == "active" and isinstance(s.get("id"), str) and s["id"] != dead]
        return str(live[0]["id"]) if live else None

    def say(self, call_id: str, channel: VoipbinChannel, text: str, step: Step, deadline: Deadline) -> None:
        """Say ``text`` into the call once: a dead session is replaced, a say that may have landed is not repeated."""
        speaking_id = self.ensure_speaking(call_id, channel, step, deadline)

        def say_it() -> bool:
            nonlocal speaking_id
            try:
                step()
                self.client.say(speaking_id, text, deadline=deadline)
            except VoipbinRejected as exc:
                if exc.status != 404:
                    raise
                # The session is gone (its text-to-speech stream died): a new one says it.
                log.warning("speaking session gone call_id=%s: opening a new one", call_id)
                step()
                dead = speaking_id
                quietly(lambda: self.client.stop_speaking(dead, deadline=deadline), call_id)
                channel.pop("speaking_id", None)
                speaking_id = self.ensure_speaking(call_id, channel, step, deadline, dead=dead)
                step()
                self.client.say(speaking_id, text, deadline=deadline)
            return True

        def counted_as_said() -> bool:
            # It reached VoIPBin and may well be playing: saying it again could
            # make the caller hear it twice, so it counts as said.
            log.warning("say unconfirmed call_id=%s: counted as said, not repeated", call_id)
            return True

        adopt_if_done(say_it, counted_as_said, lambda: None)
        # Queued speech plays after what is still playing.
        starts = max(self.clock(), channel.get("speaking_until", 0))
        channel["speaking_until"] = starts + len(text) / self.speech_rate

    def wait_until_heard(self, channel: VoipbinChannel, deadline: Deadline) -> None:
        """VoIPBin says nothing when speech ends: wait out the estimate, as the budget allows."""
        left = channel.get("speaking_until", 0) + AFTER_LAST_WORD - self.clock()
        wait = deadline.cap(left, keep=HANGUP_SECONDS)
        if wait > 0:
            time.sleep(wait)

    def stop_listening_and_speaking(self, call_id: str, channel: VoipbinChannel, deadline: Deadline) -> None:
        """The bot's part is over: its transcription and speaking session go (VoIPBin ends both with the call)."""
        transcribe_id, speaking_id = channel.get("transcribe_id"), channel.get("speaking_id")
        if transcribe_id:
            quietly(lambda: self.client.stop_transcribe(transcribe_id, deadline=deadline), call_id)
        if speaking_id:
            quietly(lambda: self.client.stop_speaking(speaking_id, deadline=deadline), call_id)


class VoipbinSpeaker(Speaker):
    """One event's speaker for one VoIPBin call: says through REST at once, streams, flushes on barge-in."""

    says_at_once = True

    def __init__(self, speech: VoipbinSpeech, conversation: "Conversation", call_id: str, deadline: Deadline,
                 *, streams: bool, barge_in: bool) -> None:
        self.speech = speech
        self.conversation = conversation
        self.call_id = call_id
        self.deadline = deadline
        self.streams = streams
        self.barge_in = barge_in
        self.reserve_seconds = speech.say_seconds
        self.started = time.time()
        self.channel_after: VoipbinChannel = {}  # the channel as saved with the turn, for its action

    def say(self, text: str, call: CallContext) -> None:
        self.speech.say(self.call_id, voipbin_channel(call.channel), text, call.step, self.deadline)

    def say_meanwhile(self, text: str, call: CallContext) -> None:
        # While a tool works: "one moment" is heard at once, and stays said whatever follows.
        try:
            self.say(text, call)
        except VoipbinError as exc:
            log.warning("filler not said call_id=%s: %s", self.call_id, exc)

    def deliver(self, unsaid: str, call: CallContext) -> None:
        if unsaid:  # a streamed reply is said already
            self.say(unsaid, call)
        self.channel_after = voipbin_channel(dict(call.channel))

    def stop_saying(self, call: CallContext) -> bool:
        if not self.barge_in:
            return False
        talked = self.conversation.recall(barge_in_marker(self.call_id))
        if talked is None or float(talked) < self.started:
            return False
        # The caller talks over the reply being streamed: what is queued goes, and no more is said.
        speaking_id = voipbin_channel(call.channel).get("speaking_id")
        if speaking_id:
            quietly(lambda: self.speech.client.flush(speaking_id, deadline=self.deadline), self.call_id)
        log.info("barge-in call_id=%s: the streamed reply stops here", self.call_id)
        return True

    def can_hand_off(self, call: CallContext) -> bool:
        # Only a call whose flow voicebot runs (fetch) can be connected on by its next action.
        return bool(voipbin_channel(call.channel).get("by_fetch"))

    def act(self, action: Action, call_id: str) -> bool:
        """After the words: hang up once they have been heard, or hand the caller to a person at the next fetch."""
        channel, deadline = self.channel_after, self.deadline
        self.speech.wait_until_heard(channel, deadline)
        if action.type == "transfer":
            self._hand_off(action.to, channel)
        else:
            self._hang_up(channel)
        return False  # the call's hang-up event (or the fetch that connects it) ends its record

    def _hand_off(self, to: str, channel: VoipbinChannel) -> None:
        number = channel.get("number") or ""
        connect: dict[str, Any] = {"type": "connect", "option": {
            "source": {"type": "tel", "target": number} if number else {},
            "destinations": [{"type": "tel", "target": to}]}}

        def hand_over(saved: dict[str, Any]) -> None:
            ch = voipbin_channel(saved)
            ch["transferred_to"] = to
            ch.setdefault("actions", []).append(connect)

        self.conversation.with_channel(self.call_id, hand_over, wait=self.deadline.cap(2.0))
        # The bot stops listening and speaking; the next fetch connects the caller.
        self.speech.stop_listening_and_speaking(self.call_id, channel, self.deadline)
        log.info("transfer call_id=%s: connecting the caller at the next fetch", self.call_id)

    def _hang_up(self, channel: VoipbinChannel) -> None:
        def hanging_up(saved: dict[str, Any]) -> None:
            ch = voipbin_channel(saved)
            ch["hanging_up"] = True
            if ch.get("by_fetch"):
                ch.setdefault("actions", []).append({"type": "hangup"})  # if the request below fails

        self.conversation.with_channel(self.call_id, hanging_up, wait=self.deadline.cap(2.0))
        try:
            self.speech.client.hang_up(self.call_id, deadline=self.deadline)
            log.info("hung up call_id=%s: the bot ended the call", self.call_id)
        except VoipbinError as exc:
            log.warning("hang-up failed call_id=%s (%s): the next fetch hangs up", self.call_id, exc)

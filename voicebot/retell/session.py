"""One Retell call's socket, from the begin message to its close.

Retell opens ``/retell/{call_id}`` when the call starts. The view has asked Retell's API that the call is
the account's and live, and opened its session (the greeting, the caller's number and variables) before
the upgrade; here voicebot sends ``config`` (``auto_reconnect``: Retell pings, and reopens a dropped
socket) and the begin message (``response_id`` 0), then reads: ``ping_pong`` is echoed, ``update_only``
and ``call_details`` keep the call alive, and each ``response_required`` (or ``reminder_required``) is a
turn of the call's conversation, run on a thread of its own while the socket is read, so that a newer
request supersedes it at once (``RetellLink``). The socket holds its call (``hold``): a second socket for
a live call is refused while this one lives.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, cast

from simple_websocket import ConnectionClosed  # type: ignore[import-untyped]

from ..completions.answer import cut_short
from ..conversation import Conversation
from ..deadline import RESPONSE_BUDGET, Deadline, put_in_effect
from ..exceptions import InvalidEvent, VoicebotError
from ..session import Channel
from ..turn import Outcome
from ..web.json_socket import JsonSocket
from .speaker import RetellLink, RetellSpeaker, Superseded, response
from .transcript import transcript_of

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0  # how often a quiet socket looks at whether the worker is stopping
IDLE_SECONDS = 30.0  # this long quiet, the call's session is kept alive
HOLD_KEY = "retell_socket"
HOLD_SECONDS = 90.0  # a socket's hold on its call lasts this long unless renewed (a worker killed lets go)
RENEW_SECONDS = 30.0
REMINDER_WORDS = "(The caller has said nothing for a while.)"


def hold(channel: Channel, now: Callable[[], float] = time.time) -> bool:
    """Take the call for this socket; False while another socket holds it."""
    held = cast("dict[str, float] | None", channel.get(HOLD_KEY))
    if held is not None and held.get("until", 0.0) > now():
        return False
    channel[HOLD_KEY] = {"until": now() + HOLD_SECONDS}
    return True


def renew(channel: Channel, now: Callable[[], float] = time.time) -> None:
    channel[HOLD_KEY] = {"until": now() + HOLD_SECONDS}


def let_go(channel: Channel) -> None:
    channel.pop(HOLD_KEY, None)


@dataclass
class _Taken:
    """The last turn this socket took: its words, how many agent utterances the transcript held then, and
    its speaker (did a word of it go out?)."""

    words: str
    agent_turns: int
    speaker: RetellSpeaker


class RetellSession:
    """The socket's side of one call: the reader (``serve``) and the turn running, if any."""

    def __init__(self, ws: Any, conversation: Conversation, call_id: str, transfer_number: str,
                 draining: threading.Event) -> None:
        self.socket = JsonSocket(ws, "retell")
        self.link = RetellLink(self.socket)
        self.conversation, self.call_id, self.transfer_number = conversation, call_id, transfer_number
        self.draining = draining
        self.taken: _Taken | None = None
        self.running: threading.Thread | None = None

    def serve(self, greeting: str, on_close: Callable[[], None]) -> None:
        """Begin (``greeting``: "" to wait for the caller) and read until the socket closes; ``on_close`` then,
        unless the worker is stopping (the socket is handed back and Retell reopens it elsewhere)."""
        self.socket.send({"response_type": "config", "config": {"auto_reconnect": True, "call_details": False}})
        self.socket.send(response(0, greeting, True))
        quiet, renewed = 0.0, time.monotonic()
        try:
            while True:
                if self.draining.is_set():
                    log.info("retell handed back call_id=%s: this worker is stopping; Retell reconnects",
                             self.call_id)
                    self._stop_turn()
                    self.conversation.with_channel(self.call_id, let_go, wait=self.conversation.settings.lock_wait)
                    self.socket.ws.close(reason=1012, message="service restart")
                    return
                if time.monotonic() - renewed > RENEW_SECONDS:
                    self.conversation.with_channel(self.call_id, renew, wait=1.0)
                    renewed = time.monotonic()
                message = self.socket.read(POLL_SECONDS)
                if message is None:
                    quiet += POLL_SECONDS
                    if quiet >= IDLE_SECONDS:
                        self.conversation.keep_alive(self.call_id)
                        quiet = 0.0
                    continue
                quiet = 0.0
                self._handle(message)
        except ConnectionClosed:
            self._stop_turn()
            if not self.draining.is_set():
                on_close()

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("interaction_type")
        if kind == "ping_pong":
            stamp = message.get("timestamp")
            if isinstance(stamp, int) and not isinstance(stamp, bool):
                self.socket.send({"response_type": "ping_pong", "timestamp": stamp})
        elif kind in ("response_required", "reminder_required"):
            response_id = message.get("response_id")
            if not isinstance(response_id, int) or isinstance(response_id, bool) or response_id <= self.link.current:
                self.socket.not_understood(f"with a response_id not after the last call_id={self.call_id}")
                return
            try:
                transcript = transcript_of(message)
            except InvalidEvent as exc:
                self.socket.not_understood(f"not understood call_id={self.call_id}: {exc}")
                return
            self._respond(response_id, kind == "reminder_required", transcript)
        elif kind not in ("update_only", "call_details"):
            self.socket.not_understood(f"not understood call_id={self.call_id} interaction_type={str(kind)[:32]}")

    def _respond(self, response_id: int, reminder: bool, transcript: Any) -> None:
        """Supersede the response under way (nothing more of it goes out) and start this one's turn."""
        self.link.supersede(response_id)
        words, heard = transcript.new_words, transcript.heard
        taken = self.taken
        unheard = False
        if taken is not None and taken.speaker.spoke and transcript.agent_turns == taken.agent_turns:
            # The last turn spoke, but none of it reached the transcript: the caller heard nothing of it, and
            # its words are in the history already; only what came after them is new.
            unheard = True
            if words.startswith(taken.words):
                words = words[len(taken.words):].strip()
        if not words:
            if not reminder:  # nothing new to answer (the same words again): the last words stand
                self.link.send_for(response_id, response(response_id, "", True))
                return
            words = REMINDER_WORDS
        speaker = RetellSpeaker(self.link, response_id, self.transfer_number)
        self.taken = _Taken(words, transcript.agent_turns, speaker)
        event_id = transcript.event_id("reminder" if reminder else "response")
        previous = self.running
        self.running = threading.Thread(target=self._turn, name=f"retell {self.call_id[:32]}", daemon=True,
                                        args=(speaker, words, "" if unheard else heard, event_id, previous))
        self.running.start()

    def _turn(self, speaker: RetellSpeaker, words: str, heard: str | None, event_id: str,
              previous: threading.Thread | None) -> None:
        deadline = Deadline(RESPONSE_BUDGET)
        put_in_effect(deadline)
        conversation, call_id = self.conversation, self.call_id
        try:
            if previous is not None:
                previous.join(deadline.remaining())  # the superseded turn saves what it said first
            if self.link.current != speaker.response_id:
                return  # superseded while it waited
            session = conversation.peek(call_id)
            last = session.get("last_turn") if session else None
            if heard == "" and last is not None or cut_short(heard, last["reply"] if last else ""):
                conversation.cut_reply(call_id, heard or "")
            turn = conversation.take_turn(call_id, words, event_id=event_id, speaker=speaker, deadline=deadline)
        except Superseded:
            return
        except VoicebotError as exc:
            # Nothing the caller could hear went out: they hear the fallback, and are listened to again.
            log.warning("retell turn failed call_id=%s: %s: %s", call_id, type(exc).__name__, exc)
            if not speaker.spoke:
                speaker.finish(conversation.settings.fallback_reply)
            return
        except Exception:
            log.exception("retell turn failed unexpectedly call_id=%s", call_id)
            return
        finally:
            put_in_effect(None)
        if turn.outcome is Outcome.DUPLICATE:
            speaker.finish(turn.reply)
        elif turn.outcome is Outcome.CALL_ENDED:
            speaker.finish(end_call=True)
        else:
            speaker.finish()

    def _stop_turn(self) -> None:
        """The socket is going: the turn under way says no more, and is let finish (it saves what was said)."""
        self.link.supersede(-1)
        if self.running is not None:
            self.running.join(RESPONSE_BUDGET)

"""A Retell response as a call's speaker: what the turn says goes out as ``response`` events of one
``response_id``, as each read of the model's stream brings it, until Retell asks for a newer response.

Retell moves on the moment the caller speaks again: a newer ``response_required`` supersedes this
response, and nothing more of it may go out. ``RetellLink`` holds the socket and the id of the response
that may speak, and sends under one lock, so a piece is either out before the newer id took over or
never sent, and the turn knows which (``spoke``): a response superseded before its first word fails
its turn (``Superseded``, nothing saved: the newer request carries the caller's words again); one
superseded after it is a barge-in, and the history keeps what was said.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from ..completions.speaker import Words
from ..speaker import Speaker
from ..tools import Action
from ..web.json_socket import JsonSocket

if TYPE_CHECKING:
    from ..session import CallContext


class Superseded(Exception):
    """Retell asked for a newer response before this one said a word."""


class RetellLink:
    """The call's socket and the one response that may speak on it now."""

    def __init__(self, socket: JsonSocket) -> None:
        self.socket = socket
        self.current = 0  # the response_id Retell asked for last (0: the begin message)
        self._lock = threading.Lock()

    def supersede(self, response_id: int) -> None:
        """Retell asked for ``response_id``: from now on only it may speak."""
        with self._lock:
            self.current = response_id

    def send_for(self, response_id: int, message: dict[str, Any]) -> bool:
        """Send ``message`` if ``response_id`` may still speak; False (nothing sent) otherwise."""
        with self._lock:
            if self.current != response_id:
                return False
            self.socket.send(message)
            return True


def response(response_id: int, content: str, complete: bool, **more: Any) -> dict[str, Any]:
    return {"response_type": "response", "response_id": response_id, "content": content,
            "content_complete": complete, **more}


class RetellSpeaker(Speaker):
    """Says one response's words as they are written; voicebot's hang-up is ``end_call``, its hand-off
    ``transfer_number``, on the response's last event."""

    says_at_once = True
    streams = True
    says_pieces = True  # Retell speaks the deltas as they come: each piece goes at once

    def __init__(self, link: RetellLink, response_id: int, transfer_number: str) -> None:
        self.link, self.response_id, self.transfer_number = link, response_id, transfer_number
        self.spoke = False  # a word of this response went out
        self.finished = False  # its last event (content_complete) went out
        self._last: Words | None = None

    def _send(self, words: Words) -> None:
        if not self.link.send_for(self.response_id, response(self.response_id, words.after(self._last), False)):
            if not self.spoke:
                raise Superseded(f"response {self.response_id} superseded before its first word")
            return  # superseded: stop_saying tells the turn, which keeps what was said
        self.spoke, self._last = True, words

    def say(self, text: str, call: "CallContext") -> None:
        self._send(Words(text))

    def say_piece(self, text: str, call: "CallContext") -> None:
        self._send(Words(text, piece=True))

    def say_meanwhile(self, text: str, call: "CallContext") -> None:
        try:
            self._send(Words(text))
        except Superseded:
            pass

    def stop_saying(self, call: "CallContext") -> bool:
        # Superseded before a word, the turn goes on to its first piece, which fails it (nothing is saved).
        return self.spoke and self.link.current != self.response_id

    def deliver(self, unsaid: str, call: "CallContext") -> None:
        if unsaid:
            self.say(unsaid, call)

    def can_hand_off(self, call: "CallContext") -> bool:
        return bool(self.transfer_number)

    def act(self, action: Action, call_id: str) -> bool:
        more = {"transfer_number": action.to or self.transfer_number} if action.type == "transfer" \
            else {"end_call": True}
        self.finish(**more)
        return True  # the bot's part, and its record, end here; Retell ends the call after the words

    def finish(self, content: str = "", **more: Any) -> None:
        """The response's last event (once): ``content_complete``, with ``more`` (end_call, transfer_number)."""
        if not self.finished:
            self.finished = True
            words = Words(content).after(self._last) if content else ""
            self.link.send_for(self.response_id, response(self.response_id, words, True, **more))

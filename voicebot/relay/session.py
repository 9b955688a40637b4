"""ConversationRelay's session (Twilio's, and Telnyx's, which speaks the same messages): one WebSocket per call.

Twilio keeps speech-to-text and text-to-speech; voicebot gets the caller's
words (``prompt``), key presses (``dtmf``) and interruptions (``interrupt``)
over the socket and answers with ``text`` tokens, streamed as the model
writes the reply, so the caller hears its first sentence while the rest is
still being written. A turn is a turn of the same conversation core as on
every platform, through a ``RelaySpeaker``. ``end`` closes the session with
handoff data; Twilio then asks the ``<Connect action>`` URL what comes next
(``/relay-end``: a ``<Dial>`` to a person, or ``<Hangup/>``). A socket that
closes without ``end`` is the caller hanging up: the call ends, with its record.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from typing import Any

from simple_websocket import ConnectionClosed  # type: ignore[import-untyped]

from .. import socket_ticket
from ..conversation import Conversation
from ..deadline import RESPONSE_BUDGET, Deadline
from ..exceptions import VoicebotError
from ..session import CallContext
from ..speaker import Speaker
from ..tools import Action
from ..web.json_socket import MAX_MESSAGE_CHARS, JsonSocket

log = logging.getLogger(__name__)

# The first message (setup) comes at once after the handshake; a socket silent this long is not Twilio's.
SETUP_SECONDS = 10.0
# Between the caller's words the socket is quiet: it is looked at this often (is the worker stopping?).
POLL_SECONDS = 1.0
# This long without a message, the call's session is kept alive (a long silence is not the end of a call).
IDLE_SECONDS = 30.0
# Messages kept waiting while a reply streams (Twilio sends a handful: an interrupt, the next prompt, keys).
MAX_PENDING = 32


class RelaySocket(JsonSocket):
    """The relay's socket: messages that come while a reply streams wait their turn (``pending``), at most
    ``MAX_PENDING`` of them."""

    def __init__(self, ws: Any) -> None:
        super().__init__(ws, "relay")
        self.pending: deque[dict[str, Any]] = deque()

    def next(self, timeout: float) -> dict[str, Any] | None:
        """The next message, or None after ``timeout`` seconds without one; ConnectionClosed when it closes."""
        if self.pending:
            return self.pending.popleft()
        return self.read(timeout)

    def take_interrupt(self) -> dict[str, Any] | None:
        """An ``interrupt`` that came meanwhile (the others stay pending, in order), without waiting."""
        while len(self.pending) < MAX_PENDING:
            message = self.read(0)
            if message is None:
                break
            self.pending.append(message)
        for message in list(self.pending):
            if message.get("type") == "interrupt":
                self.pending.remove(message)
                return message
        return None


class RelaySpeaker(Speaker):
    """Says the reply as ``text`` tokens the moment each sentence is written; ``end`` for a hang-up or hand-off."""

    says_at_once = True
    streams = True

    def __init__(self, socket: RelaySocket) -> None:
        self.socket = socket
        self.interrupted: dict[str, Any] | None = None  # the interrupt message, if the caller talked over it

    def say(self, text: str, call: CallContext) -> None:
        self.socket.send({"type": "text", "token": text + " ", "last": False})

    def deliver(self, unsaid: str, call: CallContext) -> None:
        if unsaid and self.interrupted is None:
            self.socket.send({"type": "text", "token": unsaid, "last": False})
        self.socket.send({"type": "text", "token": "", "last": True})  # the end of this talk cycle

    def stop_saying(self, call: CallContext) -> bool:
        if self.interrupted is None:
            self.interrupted = self.socket.take_interrupt()
        return self.interrupted is not None

    def act(self, action: Action, call_id: str) -> bool:
        # Twilio says what was sent, then asks the <Connect action> URL, with this, what comes next.
        handoff = {"reason": action.type, "to": action.to} if action.type == "transfer" else {"reason": "hangup"}
        self.socket.send({"type": "end", "handoffData": json.dumps(handoff)})
        self.socket.ended = True
        return True  # the bot's part, and its record, end here


def serve(ws: Any, conversation: Conversation, call_id: str, draining: threading.Event) -> None:
    """One call's session, from ``setup`` to ``end`` or the socket's close.

    The socket holds ``call_id``'s ticket (``voicebot.socket_ticket``), taken
    before the handshake: ``setup`` must name that call, or the socket is
    closed without a word. When the worker is told to stop (``draining``),
    the socket is closed after the turn under way, without ``end``, and the
    ticket given back: Twilio (``applicationReconnect``) opens it again, on
    another worker or instance, and the call goes on from its session.
    """
    socket = RelaySocket(ws)
    setup = socket.next(SETUP_SECONDS)
    if setup is None or setup.get("type") != "setup" or setup.get("callSid") != call_id:
        log.warning("relay refused call_id=%s: the first message is not a setup for the call its URL names",
                    call_id)
        ws.close(reason=1008, message="expected setup")
        return
    log.info("relay session call_id=%s", call_id)
    quiet = 0.0
    try:
        while not socket.ended:
            if draining.is_set():
                log.info("relay handed back call_id=%s: this worker is stopping; Twilio reconnects", call_id)
                socket.ended = True
                conversation.with_channel(call_id, socket_ticket.hand_back, wait=conversation.settings.lock_wait)
                ws.close(reason=1012, message="service restart")
                return
            message = socket.next(POLL_SECONDS)
            if message is None:
                quiet += POLL_SECONDS
                if quiet >= IDLE_SECONDS:
                    conversation.keep_alive(call_id)
                    quiet = 0.0
                continue
            quiet = 0.0
            _handle(socket, conversation, call_id, message)
    except ConnectionClosed:
        if not socket.ended:
            log.info("relay closed call_id=%s: the caller hung up", call_id)
            conversation.end_call(call_id, reason="hung_up", deadline=Deadline(RESPONSE_BUDGET))


def _handle(socket: RelaySocket, conversation: Conversation, call_id: str, message: dict[str, Any]) -> None:
    kind = message.get("type")
    if kind == "prompt":
        text = message.get("voicePrompt")
        if message.get("last", True) and isinstance(text, str) and text.strip():
            _turn(socket, conversation, call_id, text.strip()[:MAX_MESSAGE_CHARS])
    elif kind == "dtmf":
        digit = message.get("digit")
        if isinstance(digit, str) and len(digit) == 1 and digit in "0123456789*#ABCD":
            _turn(socket, conversation, call_id, f"(The caller pressed {digit} on the keypad.)")
    elif kind == "interrupt":
        # The caller talked over a reply whose words were all sent: it keeps what they heard.
        _heard(conversation, call_id, message)
    elif kind == "error":
        log.warning("relay error from Twilio call_id=%s: %s", call_id, str(message.get("description"))[:200])
    elif kind != "setup":  # a setup again: the socket reconnected (applicationReconnect); the call goes on
        socket.not_understood(f"not understood call_id={call_id} type={str(kind)[:32]}")


def _turn(socket: RelaySocket, conversation: Conversation, call_id: str, text: str) -> None:
    speaker = RelaySpeaker(socket)
    try:
        conversation.take_turn(call_id, text, speaker=speaker, deadline=Deadline(RESPONSE_BUDGET))
    except VoicebotError as exc:
        # Nothing the caller could hear went out; they hear the fallback, and are listened to again.
        log.warning("relay turn failed call_id=%s: %s: %s", call_id, type(exc).__name__, exc)
        socket.send({"type": "text", "token": conversation.settings.fallback_reply, "last": True})
        return
    if speaker.interrupted is not None:
        _heard(conversation, call_id, speaker.interrupted)


def _heard(conversation: Conversation, call_id: str, interrupt: dict[str, Any]) -> None:
    heard = interrupt.get("utteranceUntilInterrupt")
    conversation.cut_reply(call_id, heard.strip() if isinstance(heard, str) else "")

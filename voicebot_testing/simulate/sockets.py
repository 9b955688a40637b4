"""The socket contracts, played as their platforms play them (each call in a thread of its own): Twilio's and
Telnyx's ConversationRelay, and Retell's custom-LLM socket."""

from __future__ import annotations

import json
import socket
import time
import uuid
from typing import Any

from ..fake_retell import RetellSocket


class SocketRefused(Exception):
    """voicebot refused the socket, or it did not answer in time."""


def relay_open(url: str, headers: dict[str, str], call_id: str, number: str) -> Any:
    """Open a relay socket (``headers``: Twilio's signature; Telnyx sends none) and send ``setup``."""
    from ..ws_client import Client

    try:
        ws = Client.connect(url, headers=headers)
    except Exception as exc:
        raise SocketRefused(f"call {call_id}: {type(exc).__name__}: {exc}") from None
    # As the platform's side would: setup and the first prompt go out back to back, and Nagle's algorithm would
    # hold the prompt until the setup is acknowledged (a delayed ACK: 40 ms on the first turn's clock).
    ws.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    ws.send(json.dumps({"type": "setup", "sessionId": "VX" + uuid.uuid4().hex, "accountSid": "AC" + "0" * 32,
                        "callSid": call_id, "callControlId": call_id, "callSessionId": str(uuid.uuid4()),
                        "from": "+15550000000", "to": number, "direction": "inbound", "callStatus": "RINGING",
                        "customParameters": {}}))
    return ws


def relay_turn(ws: Any, text: str | None, interrupt: bool, timeout: float,
               digit: str = "") -> tuple[str, float, float | None]:
    """A prompt (or a key press), and the reply's tokens up to ``last``; with ``interrupt`` the caller talks
    over it after its first token. The reply heard, the turn's time, and the first token's."""
    if digit:
        ws.send(json.dumps({"type": "dtmf", "digit": digit}))
    else:
        ws.send(json.dumps({"type": "prompt", "voicePrompt": text, "lang": "en-US", "last": True}))
    sent = time.perf_counter()
    first: float | None = None
    tokens: list[str] = []
    while True:
        raw = ws.receive(timeout=timeout)
        if raw is None:
            raise SocketRefused(f"no relay reply within {timeout}s")
        message = json.loads(raw)
        if message.get("type") != "text":
            continue
        if first is None and message.get("token"):
            first = time.perf_counter() - sent
            if interrupt:
                ws.send(json.dumps({"type": "interrupt", "utteranceUntilInterrupt": message["token"].strip(),
                                    "durationUntilInterruptMs": 500}))
        tokens.append(message.get("token", ""))
        if message.get("last"):
            return "".join(tokens), time.perf_counter() - sent, first


def retell_open(base_url: str, call_id: str) -> RetellSocket:
    url = base_url.replace("https://", "wss://").replace("http://", "ws://") + f"/retell/{call_id}"
    try:
        return RetellSocket(url)
    except Exception as exc:
        raise SocketRefused(f"call {call_id}: {type(exc).__name__}: {exc}") from None


def retell_turn(side: RetellSocket, text: str, timeout: float) -> tuple[str, float, float | None]:
    """One response_required and its streamed response: the words, the turn's time, the first piece's."""
    response_id = side.say(text)
    sent = time.perf_counter()
    first: float | None = None
    words: list[str] = []
    while True:
        try:
            message = side.receive(timeout)
        except TimeoutError:
            raise SocketRefused(f"no Retell response within {timeout}s") from None
        if message.get("response_type") != "response" or message.get("response_id") != response_id:
            continue
        if first is None and message.get("content"):
            first = time.perf_counter() - sent
        words.append(message.get("content", ""))
        if message.get("content_complete"):
            reply = "".join(words)
            side.transcript.append({"role": "agent", "content": reply})
            return reply, time.perf_counter() - sent, first


def quiet_close(ws: Any) -> None:
    try:
        ws.close()
    except Exception:
        pass

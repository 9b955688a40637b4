"""The second attack's findings on the relay socket, replayed against the Procfile's server (one worker).

Each test reproduces one finding with real processes (gunicorn as the
Procfile starts it, the fake model, a real WebSocket client that misbehaves
on purpose) and checks the worker's peak memory, the socket's fate, the log
and another call on the same worker. Drills print one ``DRILL`` line.
"""

from __future__ import annotations

import json
import socket
import struct
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
from voicebot_testing.ws_client import Client, ConnectionClosed, ConnectionError as HandshakeRefused
from twilio.request_validator import RequestValidator

from .support import Gunicorn, procfile_command, wait_for
from .test_twilio import TOKEN, new_sid
from .test_twilio_relay import connect, prompt, reply, setup, voice_over_http

# The attack raised the worker to 2,163 MB; the bound the held-out check sets is +150 MB.
MAX_GROWTH_MB = 150


@pytest.fixture
def relay_server(tmp_path, fake_llm):
    """The Procfile's server in relay mode, one worker (every socket lands on the worker measured)."""
    server = Gunicorn({"REDIS_URL": "", "ANTHROPIC_API_KEY": fake_llm.api_key, "ANTHROPIC_BASE_URL": fake_llm.url,
                       "TWILIO_AUTH_TOKEN": TOKEN, "TWILIO_MODE": "relay", "WEB_CONCURRENCY": "1"},
                      command=procfile_command())
    server.env["PUBLIC_URL"] = server.url
    server.start(tmp_path / "relay.log")
    yield server
    server.stop()


def peak_mb(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def live_call(server: Gunicorn) -> tuple[Client, str]:
    sid = new_sid()
    ws = connect(voice_over_http(server.url, sid))
    setup(ws, sid)
    return ws, sid


def closed_code(ws: Client, timeout: float = 20.0) -> int | None:
    """Wait for the server to close the socket; its close code."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ws.receive(timeout=deadline - time.monotonic())
    except ConnectionClosed:
        return ws.close_reason
    raise AssertionError("the socket stayed open")


def deflate_bomb(inflated: int) -> bytes:
    """One text frame, permessage-deflate compressed, that inflates to ``inflated`` bytes (masked with zeros)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = b"a" * (1 << 20)
    parts = [packer.compress(chunk) for _ in range(inflated // len(chunk))]
    parts.append(packer.flush(zlib.Z_SYNC_FLUSH)[:-4])  # RFC 7692: the empty block's tail is left off
    payload = b"".join(parts)
    return bytes([0xC1, 0x80 | 127]) + struct.pack("!Q", len(payload)) + b"\0\0\0\0" + payload


class DeflatingClient:
    """A WebSocket client that offers permessage-deflate (simple-websocket's does not), on wsproto, so that it can
    send a frame of its own making: what an attacker's client does."""

    def __init__(self, url: str) -> None:
        from urllib.parse import urlsplit

        from wsproto import ConnectionType, WSConnection
        from wsproto.events import AcceptConnection, Request
        from wsproto.extensions import PerMessageDeflate

        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=20)
        self.ws = WSConnection(ConnectionType.CLIENT)
        signature = RequestValidator(TOKEN).compute_signature(url, {})
        self.sock.sendall(self.ws.send(Request(host=parts.netloc, target=f"{parts.path}?{parts.query}",
                                               extensions=[PerMessageDeflate()],
                                               extra_headers=[(b"X-Twilio-Signature", signature.encode())])))
        accepted = self._next(AcceptConnection)
        self.deflating = bool(accepted.extensions)

    def _next(self, kind: type) -> Any:
        while True:
            for event in self.ws.events():
                if isinstance(event, kind):
                    return event
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionClosed()
            self.ws.receive_data(data)

    def send_text(self, text: str) -> None:
        from wsproto.events import TextMessage

        self.sock.sendall(self.ws.send(TextMessage(text)))

    def close_code(self) -> int:
        from wsproto.events import CloseConnection

        return int(self._next(CloseConnection).code)


def test_a_compressed_frame_that_inflates_to_a_gigabyte_is_refused_at_a_bounded_cost(relay_server):
    worker, = relay_server.workers()
    bystander, _ = live_call(relay_server)
    sid = new_sid()
    attacker = DeflatingClient(voice_over_http(relay_server.url, sid))
    assert attacker.deflating, "the server took permessage-deflate: the bomb is read as compressed"
    attacker.send_text(json.dumps({"type": "setup", "callSid": sid, "from": "+15551230000", "to": "+15559870000"}))
    before = peak_mb(worker)
    bomb = deflate_bomb(1 << 30)
    attacker.sock.sendall(bomb)
    code = attacker.close_code()
    growth = peak_mb(worker) - before
    assert code == 1009  # too big: closed as the WebSocket layer's own limit says
    assert growth < MAX_GROWTH_MB
    prompt(bystander, "still here mk1")  # another call on the same worker goes on
    assert reply(bystander)[0] == "Heard mk1."
    bystander.close()
    print(f"\nDRILL relay-deflate-bomb: a {len(bomb) / 1e6:.1f} MB frame inflating to 1 GiB closed with {code}; "
          f"worker peak +{growth:.0f} MB (was +2,163 MB); the other call's turn answered")


def test_a_flood_of_junk_messages_during_a_turn_is_cut_off_with_one_warning(relay_server, fake_llm, monkeypatch):
    monkeypatch.setattr(fake_llm, "sentences", 3)
    monkeypatch.setattr(fake_llm, "sentence_gap", 0.5)  # a turn in flight while the junk arrives
    worker, = relay_server.workers()
    bystander, _ = live_call(relay_server)
    ws, sid = live_call(relay_server)
    before = peak_mb(worker)
    prompt(ws, "talk to me mk1")
    sent = 0
    try:
        for n in range(100_000):
            ws.send("junk" if n % 2 else json.dumps({"type": "no-such-thing", "n": n}))
            sent += 1
    except (ConnectionClosed, OSError):
        pass
    code = closed_code(ws)
    growth = peak_mb(worker) - before
    assert code == 1008
    assert growth < MAX_GROWTH_MB
    lines = relay_server.log().splitlines()
    # One line for the flood, not one a message: whichever bound it hit first (the unread queue, or the count
    # of messages not understood, read while the turn looked for an interrupt), or both once.
    unread = [line for line in lines if "messages waiting unread" in line]
    junk = [line for line in lines if "relay message" in line]
    assert len(unread) <= 1 and len(junk) <= 1 and unread + junk, (unread, junk)
    monkeypatch.setattr(fake_llm, "sentences", 1)
    prompt(bystander, "still here mk2")
    assert reply(bystander)[0] == "Heard mk2."
    bystander.close()
    print(f"\nDRILL relay-junk-flood: closed with {code} after {sent} of 100,000 junk messages; one warning line; "
          f"worker peak +{growth:.0f} MB (was +240 MB and 100,000 lines)")


def test_another_calls_ticket_or_none_opens_nothing_even_signed(relay_server, fake_llm):
    """Signed with Twilio's key, a URL that pairs the live call with another call's ticket (or with none) opens
    nothing: the ticket is bound to its call."""
    ws, sid = live_call(relay_server)
    prompt(ws, "hello mk1")
    assert reply(ws)[0] == "Heard mk1."
    requests_before = len(fake_llm.requests)
    other = new_sid()
    for forged in (voice_over_http(relay_server.url, other).replace(other, sid),
                   f"{relay_server.url.replace('http', 'ws')}/webhook/twilio/relay"):
        headers = {"X-Twilio-Signature": RequestValidator(TOKEN).compute_signature(forged, {})}
        with pytest.raises(HandshakeRefused, match="403"):
            Client.connect(forged, headers=headers)
    assert len(fake_llm.requests) == requests_before
    ws.close()
    wait_for(lambda: "the caller hung up" in relay_server.log(), timeout=10, what="the call's end")

"""Servers that misbehave on purpose, against the model's path and VoIPBin's (#33): each case checks the turn's
outcome, the time it took, how far this process's memory rose and how many requests the server saw."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

from voicebot.exceptions import LLMError, LLMTimeout, LLMUnavailable
from voicebot.llm.anthropic import AnthropicLLM
from voicebot.llm.openai import OpenAIChatLLM
from voicebot.voipbin.client import VoipbinClient
from voicebot.voipbin.exceptions import VoipbinUnavailable
from voicebot_testing.hostile_http import (HostileServer, PeakMemory, gzip_bomb, huge, late, response, then_close,
                                           trickle)

MESSAGE = json.dumps({"id": "msg_1", "type": "message", "role": "assistant", "content": [
    {"type": "text", "text": "Heard it."}], "usage": {"input_tokens": 3, "output_tokens": 2}}).encode()
COMPLETION = json.dumps({"id": "c1", "object": "chat.completion", "choices": [
    {"index": 0, "message": {"role": "assistant", "content": "Heard it."}, "finish_reason": "stop"}]}).encode()
HI = [{"role": "user", "content": "hi"}]
DEADLINE = 2.0
# What a turn may add to a worker's memory whatever the server sends: the answer's cap (4 MiB) and some.
MEMORY_MB = 40


def anthropic(server: HostileServer) -> AnthropicLLM:
    return AnthropicLLM(api_key="k", model="m", max_tokens=10, base_url=server.url)


def openai_llm(server: HostileServer) -> OpenAIChatLLM:
    return OpenAIChatLLM(api_key="k", model="m", max_tokens=10, base_url=server.url + "/v1")


MODELS = {"anthropic": (anthropic, MESSAGE), "openai": (openai_llm, COMPLETION)}


@pytest.fixture(params=sorted(MODELS))
def model(request):
    return MODELS[request.param]


def timed(call):
    started = time.monotonic()
    try:
        return call(), time.monotonic() - started
    except Exception as exc:  # noqa: BLE001 - the outcome is what is checked
        return exc, time.monotonic() - started


def replies(make, server: HostileServer, count: int) -> list[str]:
    """``count`` turns' replies from the adapter ``make`` builds on ``server``; both closed after."""
    llm = make(server)
    try:
        return [llm.reply("s", HI, DEADLINE).text for _ in range(count)]
    finally:
        llm.close()
        server.close()


BIG = 200 * 1024 * 1024


@pytest.mark.parametrize("attack", ["length", "chunked", "gzip-bomb"])
def test_a_huge_answer_fails_the_turn_at_its_cap_not_in_memory(model, attack):
    make, ok_body = model
    hostile = {"length": lambda: huge(BIG), "chunked": lambda: huge(BIG, chunked=True),
               "gzip-bomb": lambda: gzip_bomb(1 << 30)}[attack]()
    server = HostileServer([hostile])
    other = HostileServer([response(ok_body)])  # another call's turn on the same worker, meanwhile
    llm, bystander = make(server), make(other)
    heard: list[object] = []
    try:
        with PeakMemory() as memory:
            thread = threading.Thread(target=lambda: heard.append(timed(lambda: bystander.reply("s", HI, 2.0))))
            outcome, took = timed(lambda: llm.reply("s", HI, DEADLINE))
            thread.start()
            thread.join()
    finally:
        llm.close()
        bystander.close()
        server.close()
        other.close()
    assert isinstance(outcome, LLMUnavailable) and "larger than" in str(outcome), outcome
    assert took < DEADLINE + 0.5
    assert memory.rose_mb < MEMORY_MB, f"memory rose {memory.rose_mb:.0f} MB"
    assert len(server.requests) == 1
    (reply, other_took), = heard
    assert getattr(reply, "text", None) == "Heard it." and other_took < 1.0


@pytest.mark.parametrize("attack", ["length", "gzip-bomb"])
def test_a_huge_voipbin_answer_is_unavailable_not_memory(attack):
    server = HostileServer([huge(BIG) if attack == "length" else gzip_bomb(1 << 30)])
    client = VoipbinClient(server.url + "/v1.0", "key", read_timeout=DEADLINE)
    try:
        with PeakMemory() as memory:
            outcome, took = timed(lambda: client.request("POST", "/calls", {"destinations": []}))
    finally:
        client.close()
        server.close()
    assert isinstance(outcome, VoipbinUnavailable) and outcome.maybe_done, outcome
    assert took < DEADLINE + 1.5 and memory.rose_mb < MEMORY_MB and len(server.requests) == 1


def test_a_stream_that_never_ends_is_cut_at_its_cap():
    event = b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a"}}\n\n'
    start = (b'data: {"type":"message_start","message":{"usage":{"input_tokens":1}}}\n\n'
             b'data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n\n')

    def endless(conn):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = start + event * 2000
        while True:
            conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            chunk = event * 2000

    server = HostileServer([endless])
    llm = anthropic(server)
    try:
        with PeakMemory() as memory:
            outcome, took = timed(lambda: llm.stream_reply("s", HI, 5.0, lambda text: True))
    finally:
        llm.close()
        server.close()
    assert isinstance(outcome, LLMUnavailable) and "larger than" in str(outcome), outcome
    assert took < 5.0 and memory.rose_mb < MEMORY_MB


def test_a_second_response_sent_unasked_never_answers_the_next_turn(model):
    make, ok_body = model
    crossed = ok_body.replace(b"Heard it.", b"CROSSED-REPLY-FOR-ANOTHER-CALL")
    server = HostileServer([response(ok_body) + response(crossed), response(ok_body)])
    llm = make(server)
    try:
        first = llm.reply("s", HI, DEADLINE).text
        second, _ = timed(lambda: llm.reply("s", HI, DEADLINE))
    finally:
        llm.close()
        server.close()
    assert first == "Heard it."
    assert getattr(second, "text", str(second)) == "Heard it."


def test_stray_bytes_after_a_body_do_not_break_the_next_turn(model):
    make, ok_body = model
    server = HostileServer([response(ok_body) + b"\r\n", response(ok_body)])
    heard = replies(make, server, 2)
    assert heard == ["Heard it."] * 2


@pytest.mark.parametrize("status", ["204 No Content", "304 Not Modified"])
def test_an_answer_without_a_body_ends_at_its_headers(status):
    # A 204 or 304 with no length, and the connection kept open: read to its end, it would wait out the deadline.
    server = HostileServer([f"HTTP/1.1 {status}\r\n\r\n".encode()] * 3)
    client = VoipbinClient(server.url + "/v1.0", "key", read_timeout=DEADLINE)
    llm = anthropic(server)
    try:
        hang_ups = [timed(lambda: client.hang_up(call)) for call in ("c1", "c2")]
        kept = server.connections
        outcome, model_took = timed(lambda: llm.reply("s", HI, DEADLINE))
    finally:
        client.close()
        llm.close()
        server.close()
    for outcome_of_hang_up, took in hang_ups:  # done (204), or a 3xx that is not followed (304): at once
        assert took < 0.5 and not isinstance(outcome_of_hang_up, VoipbinUnavailable), outcome_of_hang_up
    assert model_took < 0.5
    assert isinstance(outcome, LLMError) and not isinstance(outcome, LLMTimeout), outcome
    assert kept == 1 and len(server.requests) == 3  # kept: each answer ended where it should


def test_both_lengths_given_close_the_connection_after_the_answer(model):
    make, ok_body = model
    half = len(ok_body) // 2
    both = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Length: 3\r\n\r\n" + b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (
                half, ok_body[:half], len(ok_body) - half, ok_body[half:]))
    server = HostileServer([both, response(ok_body)])
    heard = replies(make, server, 2)
    assert heard == ["Heard it."] * 2 and server.connections == 2  # RFC 9112: not kept


def test_a_trickled_answer_ends_at_the_deadline(model):
    make, ok_body = model
    server = HostileServer([trickle(response(ok_body), 0.1)])
    llm = make(server)
    try:
        outcome, took = timed(lambda: llm.reply("s", HI, 1.0))
    finally:
        llm.close()
        server.close()
    assert isinstance(outcome, LLMTimeout) and took < 1.5


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n{\"content\":",  # closed mid-body
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n",  # a chunk size that is no number
    b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n{}",
    b"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:9/steal\r\nContent-Length: 0\r\n\r\n",
])
def test_a_broken_answer_or_a_redirect_is_the_model_unavailable_and_never_followed(answer):
    server = HostileServer([then_close(answer)])
    llm = anthropic(server)
    try:
        outcome, took = timed(lambda: llm.reply("s", HI, DEADLINE))
    finally:
        llm.close()
        server.close()
    assert isinstance(outcome, LLMError) and took < DEADLINE and len(server.requests) == 1, outcome


def test_a_connection_is_kept_in_a_busy_worker_whose_descriptors_pass_1024(model):
    make, ok_body = model
    held = [os.open("/dev/null", os.O_RDONLY) for _ in range(1100)]  # select() fails past 1024; poll() does not
    server = HostileServer([response(ok_body)] * 3 + [late(response(ok_body), 0.5)])
    llm = make(server)
    try:
        heard = [llm.reply("s", HI, DEADLINE).text for _ in range(3)]
        # A model that thinks for half a second: the turn waits on its socket, it does not spin on a core
        # (libcurl's own fdset leaves descriptors past 1024 out, and a select on it returns at once).
        cpu = time.thread_time()
        heard.append(llm.reply("s", HI, DEADLINE).text)
        cpu = time.thread_time() - cpu
    finally:
        llm.close()
        server.close()
        for fd in held:
            os.close(fd)
    assert heard == ["Heard it."] * 4 and server.connections == 1
    assert cpu < 0.2, f"{cpu:.2f} s of CPU waiting half a second for the model"


def test_the_model_post_read_and_dropped_on_a_kept_connection_is_sent_once(model):
    make, ok_body = model
    server = HostileServer([response(ok_body), "close", response(ok_body)])
    llm = make(server)
    try:
        first = llm.reply("s", HI, DEADLINE).text
        dropped, _ = timed(lambda: llm.reply("s", HI, DEADLINE))
        assert len(server.requests) == 2  # the dropped one arrived once: not billed twice
        third = llm.reply("s", HI, DEADLINE).text
    finally:
        llm.close()
        server.close()
    assert first == third == "Heard it." and isinstance(dropped, LLMUnavailable)
    assert len(server.requests) == 3


def test_tls_verifies_the_host_it_named_though_the_address_is_pinned(monkeypatch, tmp_path):
    from .support import TLSProxy

    server = HostileServer([response(MESSAGE)] * 2)
    proxy = TLSProxy(server.port).start()
    try:
        untrusted = AnthropicLLM(api_key="k", model="m", max_tokens=10, base_url=f"https://localhost:{proxy.port}")
        refused, _ = timed(lambda: untrusted.reply("s", HI, DEADLINE))
        untrusted.close()
        assert isinstance(refused, LLMUnavailable) and "TLS" in str(refused), refused
        assert server.requests == []  # nothing was sent to a server whose certificate did not check out
        proxy.ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
        monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
        trusted = AnthropicLLM(api_key="k", model="m", max_tokens=10, base_url=f"https://localhost:{proxy.port}")
        heard = trusted.reply("s", HI, DEADLINE).text
        trusted.close()
        assert heard == "Heard it."
        assert b"\r\nHost: localhost:%d" % proxy.port in server.requests[0]
    finally:
        proxy.stop()
        server.close()

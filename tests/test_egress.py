"""The egress layer (voicebot/egress) under the model's and VoIPBin's calls: HTTP/1.1 as servers really answer it,
connections kept, nothing sent twice."""

from __future__ import annotations

import gzip
import json
import threading

import pytest

from voicebot.exceptions import LLMRejected, LLMUnavailable
from voicebot.llm.anthropic import AnthropicLLM
from voicebot.voipbin.client import VoipbinClient
from voicebot.voipbin.exceptions import VoipbinUnavailable
from voicebot_testing.hostile_http import HostileServer

from .support import free_port

MESSAGE = {"id": "msg_1", "type": "message", "role": "assistant", "model": "m", "stop_reason": "end_turn",
           "content": [{"type": "text", "text": "Heard it."}], "usage": {"input_tokens": 3, "output_tokens": 2}}
BODY = json.dumps(MESSAGE).encode()


def ok(body: bytes = BODY, *headers: str) -> bytes:
    lines = ["HTTP/1.1 200 OK", "Content-Type: application/json", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def chunked(body: bytes) -> bytes:
    half = len(body) // 2
    chunks = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(part), part) for part in (body[:half], body[half:]))
    return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\nX-Trailer: t\r\n\r\n"


def ask(server: HostileServer, times: int = 1) -> list[str]:
    llm = AnthropicLLM(api_key="k", model="m", max_tokens=10, base_url=server.url)
    try:
        return [llm.reply("system", [{"role": "user", "content": "hi"}], timeout=2).text for _ in range(times)]
    finally:
        llm.close()
        server.close()


def test_length_and_chunked_bodies_are_read_on_one_kept_connection():
    server = HostileServer([ok(), chunked(BODY), b"HTTP/1.1 100 Continue\r\n\r\n" + ok()])
    assert ask(server, 3) == ["Heard it."] * 3
    assert server.connections == 1


def test_a_gzipped_answer_nobody_asked_for_is_still_read():
    assert ask(HostileServer([ok(gzip.compress(BODY), "Content-Encoding: gzip")])) == ["Heard it."]


def test_the_model_request_carries_the_sdks_headers_and_one_host():
    server = HostileServer([ok()])
    assert ask(server) == ["Heard it."]
    head = server.requests[0].decode().lower()
    assert head.startswith("post /v1/messages http/1.1\r\n")
    assert ("x-api-key: k\r\n" in head or "authorization: bearer k\r\n" in head) and "anthropic-version:" in head
    assert head.count("\r\nhost: ") == 1
    assert "user-agent: anthropic/python" in head and "x-stainless-" not in head  # not the SDK's own transport


def test_connection_close_is_honoured_and_the_next_call_opens_another():
    server = HostileServer([ok(BODY, "Connection: close"), ok()])
    assert ask(server, 2) == ["Heard it."] * 2
    assert server.connections == 2


def test_a_post_the_server_read_and_dropped_is_never_sent_again():
    """The attack (#33): a server that reads the whole POST on a kept connection and closes got it twice, a
    turn billed twice. A request that may have arrived is not repeated: the turn falls back, and the next
    one goes on a new connection."""
    server = HostileServer([ok(), "close", ok()])
    llm = AnthropicLLM(api_key="k", model="m", max_tokens=10, base_url=server.url)
    try:
        assert llm.reply("system", [{"role": "user", "content": "hi"}], timeout=2).text == "Heard it."
        with pytest.raises(LLMUnavailable):
            llm.reply("system", [{"role": "user", "content": "hi"}], timeout=2)
        assert len(server.requests) == 2  # the dropped POST arrived once
        assert llm.reply("system", [{"role": "user", "content": "hi"}], timeout=2).text == "Heard it."
    finally:
        llm.close()
        server.close()
    assert len(server.requests) == 3 and server.connections == 2


@pytest.mark.parametrize("answer", [
    b"not http at all\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n{\"a\":",
    ok(b"{not json"),
])
def test_a_malformed_answer_is_the_model_unavailable(answer):
    with pytest.raises(LLMUnavailable):
        ask(HostileServer([answer]))


def test_a_status_the_api_refuses_with_is_mapped_to_ours():
    error = json.dumps({"type": "error", "error": {"type": "invalid_request_error", "message": "no"}}).encode()
    answer = ok(error).replace(b"200 OK", b"400 Bad Request")
    with pytest.raises(LLMRejected, match="HTTP 400"):
        ask(HostileServer([answer]))


def test_threads_one_after_another_share_one_kept_connection():
    server = HostileServer([ok()] * 3)
    llm = AnthropicLLM(api_key="k", model="m", max_tokens=10, base_url=server.url)
    heard: list[str] = []
    try:
        for _ in range(3):  # a worker's threads take turns: each finds the connection the last one left
            thread = threading.Thread(target=lambda: heard.append(
                llm.reply("system", [{"role": "user", "content": "hi"}], timeout=2).text))
            thread.start()
            thread.join()
    finally:
        llm.close()
        server.close()
    assert heard == ["Heard it."] * 3 and server.connections == 1


# VoIPBin's REST calls through the same layer: a say that may have arrived is never sent again.

def voipbin(server: HostileServer) -> VoipbinClient:
    return VoipbinClient(server.url + "/v1.0", "the-access-key", read_timeout=2)


def test_voipbin_requests_carry_the_key_in_a_cookie_and_share_a_kept_connection():
    server = HostileServer([ok(b"{}"), ok(b'{"result": [], "next_page_token": ""}')])
    client = voipbin(server)
    try:
        client.say("s1", "Hello.")
        assert client.transcribes_of("c1") == []
    finally:
        client.close()
        server.close()
    assert server.connections == 1
    say, listing = (head.decode() for head in server.requests)
    assert say.startswith("POST /v1.0/speakings/s1/say HTTP/1.1\r\n") and "Cookie: accesskey=the-access-key" in say
    assert listing.startswith("GET /v1.0/transcribes?reference_type=call&reference_id=c1&page_size=100 HTTP/1.1")
    assert "the-access-key" not in say.split("\r\n")[0] + listing.split("\r\n")[0]  # never in a URL


def test_a_voipbin_say_cut_off_on_a_kept_connection_is_not_sent_again():
    server = HostileServer([ok(b"{}"), "close", ok(b"{}")])
    client = voipbin(server)
    try:
        client.say("s1", "Hello.")
        with pytest.raises(VoipbinUnavailable, match="connection lost") as lost:
            client.say("s1", "Hello again.")
    finally:
        client.close()
        server.close()
    assert lost.value.maybe_done  # it may have been said: the speaker counts it as said
    assert len(server.requests) == 2 and server.connections == 1


def test_a_voipbin_listing_cut_off_on_a_kept_connection_is_asked_again():
    server = HostileServer([ok(b"{}"), "close", ok(b'{"result": [], "next_page_token": ""}')])
    client = voipbin(server)
    try:
        client.say("s1", "Hello.")
        assert client.speakings_of("c1") == []
    finally:
        client.close()
        server.close()
    assert server.connections == 2


def test_a_voipbin_server_that_is_not_there_is_unavailable_and_nothing_was_done():
    client = VoipbinClient(f"http://127.0.0.1:{free_port()}/v1.0", "the-access-key", read_timeout=2)
    try:
        with pytest.raises(VoipbinUnavailable, match="could not connect") as refused:
            client.say("s1", "Hello.")
    finally:
        client.close()
    assert not refused.value.maybe_done


def test_behind_a_proxy_requests_go_through_it_and_no_proxy_is_honoured(monkeypatch):
    proxy = HostileServer([ok(b"{}")])
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    client = VoipbinClient("http://voipbin.invalid/v1.0", "the-access-key", read_timeout=2)
    try:
        client.say("s1", "Hello.")
    finally:
        client.close()
        proxy.close()
    head = proxy.requests[0].decode()
    assert head.startswith("POST http://voipbin.invalid/v1.0/speakings/s1/say HTTP/1.1\r\n")
    assert "Cookie: accesskey=the-access-key" in head
    server = HostileServer([ok(b"{}")])
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    client = voipbin(server)
    try:
        client.say("s1", "Hello.")
    finally:
        client.close()
        server.close()
    assert server.requests[0].decode().startswith("POST /v1.0/speakings/s1/say HTTP/1.1")


def test_a_line_break_never_reaches_the_server_as_a_header_of_its_own():
    from voicebot.egress import HTTP

    server = HostileServer([ok(b"{}"), ok(b"{}")])
    http = HTTP(headers={"x-api-key": "k\r\nX-Evil: 1"})
    try:
        with pytest.raises(ValueError):
            http.request("POST", server.url + "/x", body=b"{}", limit=100)
    finally:
        http.close()
    client = voipbin(server)
    try:
        client.hang_up("c1/../../customer?x=1\r\nX-Evil: 1")
    finally:
        client.close()
        server.close()
    request_line = server.requests[0].decode().split("\r\n")[0]
    assert request_line == "POST /v1.0/calls/c1%2F..%2F..%2Fcustomer%3Fx%3D1%0D%0AX-Evil%3A%201/hangup HTTP/1.1"
    assert all("\r\nX-Evil" not in head.decode() for head in server.requests)

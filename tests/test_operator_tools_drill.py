"""The operator's tools through real gunicorn (2 workers) and Redis, on both contracts."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from voicebot_testing.fake_llm import MARKER
from voicebot_testing.fake_voipbin import call_event_data, transcript_event_data

from .support import Gunicorn, ToolServer

SECRET = "drill-tool-secret"
NUMBER = "+15559870000"


@pytest.fixture
def tool():
    server = ToolServer(SECRET)
    yield server
    server.stop()


@pytest.fixture
def server(tmp_path, fake_llm, redis_url, redis_prefix, tool, voipbin):
    fake_llm.record = False
    gunicorn = Gunicorn({
        "REDIS_URL": redis_url, "REDIS_PREFIX": redis_prefix, "ANTHROPIC_API_KEY": fake_llm.api_key,
        "ANTHROPIC_BASE_URL": fake_llm.url, "WEB_CONCURRENCY": "2", "WEB_THREADS": "64",
        "TOOLS_FILE": tool.tools_file(tmp_path / "tools.json", timeout=1.5), "TOOLS_SECRET": SECRET,
        "TOOLS_ALLOW_LOOPBACK": "1", "VOIPBIN_WEBHOOK_SECRET": voipbin.webhook_secret,
        "VOIPBIN_ACCESS_KEY": voipbin.access_key, "VOIPBIN_API_URL": voipbin.api_url, "VOIPBIN_NUMBERS": NUMBER,
        "VOIPBIN_TIMEOUT_SECONDS": "1",
    }).start(tmp_path / "gunicorn.log")
    yield gunicorn
    gunicorn.stop()
    fake_llm.record = True


def article_turn(server, call_id: str, text: str) -> str:
    answer = requests.post(server.url + "/webhook/transcript", json={"call_id": call_id, "transcript": text},
                           timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()["response"]


def test_concurrent_calls_see_only_their_own_tool_answers(server, tool):
    def call(n: int) -> tuple[int, str]:
        return n, article_turn(server, f"tools-{n}", f"order mkorder{n} tool:lookup_order")

    with ThreadPoolExecutor(20) as pool:
        replies = list(pool.map(call, range(20)))
    for n, reply in replies:
        assert MARKER.findall(reply) == [f"mkorder{n}", f"mkorder{n}"], reply  # its words, its tool's echo
    assert len(tool.calls) == 20 and tool.bad_signatures == 0
    assert {c["call_id"] for c in tool.calls} == {f"tools-{n}" for n in range(20)}


@pytest.mark.parametrize("mode, words", [("error", "answered with an error"), ("notjson", "not JSON"),
                                         ("hang", "did not answer in time")])
def test_a_failing_tool_is_told_to_the_caller_never_a_5xx(server, tool, mode, words):
    tool.mode = mode
    reply = article_turn(server, f"failing-{mode}", "tool:lookup_order mk1")
    assert "The tool failed" in reply and words in reply


def test_on_voipbin_a_slow_tool_is_covered_by_its_filler(server, tool, voipbin):
    tool.mode, tool.delay = "slow", 1.2
    url = server.url + "/webhook/voipbin"
    call_id = voipbin.answer_call()
    assert voipbin.send(url, "call_progressing", call_event_data(call_id, "progressing")).status_code == 200
    data = transcript_event_data(voipbin.transcribe_of(call_id), "order mk7 tool:lookup_order")
    answer = voipbin.deliver(url, "transcript_created", data)
    assert answer.status_code == 200 and answer.json() == {"status": "said"}
    said = voipbin.said[call_id]
    assert said[1:3] == ["Let me check.", "One moment while I check that."]
    # Then the reply, streamed: a say for each sentence as the model writes it.
    assert re.match(r"Heard mk7\. The tool said: .*mk7", " ".join(said[3:]))
    print(f"\nDRILL tools: said into the VoIPBin call, in order: {said[1:]}")

"""Prompt caching: breakpoints sent as the API documents them, usage billed by its rules, counted per call."""

from __future__ import annotations

import subprocess
import sys

from voicebot_testing.fake_llm import PromptCache
from voicebot.runtime import runtime_of

from .support import ROOT

LONG = " ".join(["word"] * 2000)


def body(*user_turns: str, system: str = LONG, cached: bool = True) -> dict:
    messages = []
    for n, text in enumerate(user_turns):
        messages.append({"role": "user", "content": text})
        if n < len(user_turns) - 1:
            messages.append({"role": "assistant", "content": "ok"})
    if cached:
        last = messages[-1]
        messages[-1] = {"role": "user", "content": [{"type": "text", "text": last["content"],
                                                     "cache_control": {"type": "ephemeral"}}]}
        return {"system": [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}],
                "messages": messages}
    return {"system": system, "messages": messages}


def test_the_fake_bills_a_cache_write_then_reads_by_the_apis_rules():
    cache = PromptCache(min_tokens=1024, ttl=300)
    first = cache.usage(body("hello there"), now=0)
    assert first["cache_read_input_tokens"] == 0 and first["cache_creation_input_tokens"] > 2000
    second = cache.usage(body("hello there", "and more"), now=10)
    assert second["cache_read_input_tokens"] == first["cache_creation_input_tokens"]  # the prefix up to turn 1
    assert 0 < second["cache_creation_input_tokens"] < 20 and second["input_tokens"] == 0
    expired = cache.usage(body("hello there", "and more", "again"), now=10 + 301)
    assert expired["cache_read_input_tokens"] == 0  # five minutes without a hit: gone


def test_no_breakpoints_or_a_short_prefix_cache_nothing():
    cache = PromptCache(min_tokens=1024)
    plain = cache.usage(body("hi", cached=False), now=0)
    assert plain["cache_creation_input_tokens"] == 0 and plain["input_tokens"] > 2000
    short = cache.usage(body("hi", system="brief"), now=0)
    assert short["cache_creation_input_tokens"] == 0 and short["cache_read_input_tokens"] == 0


def test_calls_send_breakpoints_and_their_records_and_metrics_carry_the_bill(make_app, fake_llm):
    app = make_app(SYSTEM_PROMPT=LONG)
    client = app.test_client()
    for n in range(3):
        client.post("/webhook/transcript", json={"call_id": "c", "transcript": f"mk{n}"})
    sent = fake_llm.requests[-1]
    assert sent["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert sent["messages"][-1]["content"][-1]["cache_control"] == {"type": "ephemeral"}
    assert "cache_control" not in str(fake_llm.requests[-1]["messages"][:-1])  # the stored history is clean
    client.post("/webhook/transcript", json={"type": "call.ended", "call_id": "c"})
    (record,) = runtime_of(app).records.export(0)
    assert record["usage"]["cache_read"] > 2000 and record["usage"]["output"] > 0
    assert 'voicebot_llm_tokens_total{kind="cache_read"}' in client.get("/metrics").get_data(as_text=True)


def test_caching_can_be_turned_off(make_app, fake_llm):
    client = make_app(PROMPT_CACHING=False).test_client()
    client.post("/webhook/transcript", json={"call_id": "c", "transcript": "mk1"})
    assert isinstance(fake_llm.requests[-1]["system"], str)


def test_the_token_benchmark_meets_its_target():
    done = subprocess.run([sys.executable, "bench/tokens.py"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "the input side bills" in done.stdout

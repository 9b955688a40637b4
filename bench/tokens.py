"""Tokens per call, with prompt caching off and on: a 10-turn call with a 5,000-token system prompt.

    .venv/bin/python bench/tokens.py

The call runs through voicebot's own app (the article's contract) against
``voicebot fake-llm``, which bills usage by the Messages API's caching rules
(prefix match up to a breakpoint, at least 1,024 tokens, 5 minutes). Cost is
at Claude Haiku's prices per million tokens: input $1, cache write $1.25,
cache read $0.10, output $5.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from voicebot import create_app  # noqa: E402
from voicebot_testing.fake_llm import FakeMessagesAPI  # noqa: E402
from voicebot.runtime import runtime_of  # noqa: E402

PRICES = {"input": 1.0, "cache_write": 1.25, "cache_read": 0.10, "output": 5.0}  # $ per million tokens
SYSTEM_PROMPT = "You are a helpful support agent for a shop. " + " ".join(
    f"Policy {n}: answer plainly, briefly, and kindly, and never read out links or lists." for n in range(356))


def call_usage(caching: bool, fake: FakeMessagesAPI) -> dict[str, int]:
    fake.reset()
    app = create_app({"ANTHROPIC_API_KEY": fake.api_key, "ANTHROPIC_BASE_URL": fake.url, "REDIS_URL": "",
                      "SYSTEM_PROMPT": SYSTEM_PROMPT, "PROMPT_CACHING": caching, "LOG_LEVEL": "ERROR"})
    client = app.test_client()
    for turn in range(10):
        answer = client.post("/webhook/transcript", json={"call_id": "c", "transcript": f"Question {turn} mk{turn}"})
        assert answer.status_code == 200, answer.get_json()
    client.post("/webhook/transcript", json={"type": "call.ended", "call_id": "c"})
    (record,) = runtime_of(app).records.export(0)
    return record["usage"]


def cost(usage: dict[str, int], kinds=tuple(PRICES)) -> float:
    return sum(usage.get(kind, 0) * PRICES[kind] for kind in kinds) / 1e6


def main() -> int:
    with FakeMessagesAPI(record=False) as fake:
        off, on = call_usage(False, fake), call_usage(True, fake)
    print("| caching | input | cache write | cache read | output | input-side cost $ | total cost $ |")
    print("|---|---|---|---|---|---|---|")
    inputs = ("input", "cache_write", "cache_read")
    for name, usage in (("off", off), ("on", on)):
        print(f"| {name} | {usage.get('input', 0)} | {usage.get('cache_write', 0)} | {usage.get('cache_read', 0)} "
              f"| {usage.get('output', 0)} | {cost(usage, inputs):.5f} | {cost(usage):.5f} |")
    ratio = cost(on, inputs) / cost(off, inputs)
    print(f"\nwith caching, the input side bills {ratio:.0%} of it without (target: at most 30%)")
    return 0 if ratio <= 0.30 else 1


if __name__ == "__main__":
    sys.exit(main())

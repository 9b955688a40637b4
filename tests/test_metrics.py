"""GET /metrics: Prometheus text with turns, latencies, fallbacks, errors and active calls."""

from __future__ import annotations

from .support import metric


def test_metrics_count_turns_fallbacks_errors_and_active_calls(client, fake_llm):
    before = client.get("/metrics").get_data(as_text=True)
    client.post("/webhook/call-started", json={"call_id": "m1"})
    client.post("/webhook/transcript", json={"call_id": "m1", "transcript": "mk1"})
    client.post("/webhook/transcript", json={"call_id": "m2", "transcript": "mk1"})
    fake_llm.fail_rate = 1.0
    client.post("/webhook/transcript", json={"call_id": "m1", "transcript": "mk2"})
    client.post("/webhook/transcript", data="not json", content_type="application/json")
    client.post("/webhook/transcript", json={"type": "call.ended", "call_id": "m2"})
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    after = response.get_data(as_text=True)

    def grew(name, labels=""):
        return metric(after, name, labels) - metric(before, name, labels)

    assert grew("voicebot_turns_total", '{outcome="reply"}') == 2
    assert grew("voicebot_turns_total", '{outcome="fallback"}') == 1
    assert grew("voicebot_fallbacks_total", '{cause="LLMUnavailable"}') == 1
    assert grew("voicebot_errors_total", '{kind="invalid_event"}') == 1
    assert grew("voicebot_calls_total", '{event="started"}') == 2
    assert grew("voicebot_calls_total", '{event="ended"}') == 1
    assert grew("voicebot_turn_seconds_count") == 3
    assert grew("voicebot_llm_seconds_count") == 3
    assert grew("voicebot_lock_wait_seconds_count") == 3
    assert metric(after, "voicebot_active_calls") == 1

"""The article's webhook contract, against the in-memory store and a real Redis."""

from __future__ import annotations

import threading

import pytest

from voicebot_testing.fake_llm import MARKER


@pytest.fixture
def fake_llm(any_model):
    """Every test here holds for both model APIs: Anthropic's Messages and OpenAI's Chat Completions."""
    return any_model


def system_and_turns(request: dict) -> tuple[str, list[dict]]:
    """The system prompt and the turns a request carried, from either API's shape."""
    if "system" in request:
        return request["system"][0]["text"], request["messages"]
    first, *turns = request["messages"]
    assert first["role"] == "system"
    return first["content"], turns


def start(client, call_id, caller="+15550001111"):
    return client.post("/webhook/call-started",
                       json={"type": "call.started", "call_id": call_id, "caller_num": caller})


def say(client, call_id, text, caller="+15550001111"):
    return client.post("/webhook/transcript",
                       json={"type": "transcript", "call_id": call_id, "caller_num": caller,
                             "transcript": text})


def end(client, call_id):
    return client.post("/webhook/transcript", json={"type": "call.ended", "call_id": call_id})


def heard(response) -> list[str]:
    """The markers the fake model saw in this call's history, in order."""
    assert response.status_code == 200, response.get_json()
    return MARKER.findall(response.get_json()["response"])


def test_call_started_answers_the_greeting(client):
    response = start(client, "call-1")
    assert response.status_code == 200
    assert response.get_json() == {"greeting": "Hello! How can I help you today?"}


def test_greeting_is_configurable(make_app):
    client = make_app(GREETING="Thanks for calling Acme.").test_client()
    assert start(client, "c").get_json() == {"greeting": "Thanks for calling Acme."}


def test_each_reply_sees_the_whole_history_of_its_call(client, fake_llm):
    start(client, "call-1")
    assert heard(say(client, "call-1", "first mkA1")) == ["mkA1"]
    assert heard(say(client, "call-1", "second mkA2")) == ["mkA1", "mkA2"]
    assert heard(say(client, "call-1", "third mkA3")) == ["mkA1", "mkA2", "mkA3"]


def test_the_model_gets_the_system_prompt_apart_and_alternating_roles(make_app, fake_llm):
    client = make_app(SYSTEM_PROMPT="Be Acme's agent.").test_client()
    start(client, "c")
    say(client, "c", "one mk1")
    say(client, "c", "two mk2")
    request = fake_llm.requests[-1]
    system, messages = system_and_turns(request)
    assert system.startswith("Be Acme's agent.")
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[0]["content"] == "one mk1"
    assert messages[1]["content"] == "Heard mk1."
    if "system" in request:  # the Messages API: one cached text block, the default model
        assert request["system"][0]["cache_control"] == {"type": "ephemeral"}
        assert request["model"] == "claude-haiku-5-5"
    else:  # Chat Completions: only LLM_MODEL, which the server serves
        assert request["model"] == fake_llm.models[0]
    assert 0 < request["max_tokens"] <= 300


def test_calls_never_see_each_other(client):
    start(client, "call-a")
    start(client, "call-b")
    say(client, "call-a", "mkA1")
    assert heard(say(client, "call-b", "mkB1")) == ["mkB1"]
    assert heard(say(client, "call-a", "mkA2")) == ["mkA1", "mkA2"]


def test_a_repeated_call_started_keeps_the_history(client):
    start(client, "c")
    say(client, "c", "mk1")
    assert start(client, "c").status_code == 200
    assert heard(say(client, "c", "mk2")) == ["mk1", "mk2"]


def test_a_transcript_for_an_unknown_call_opens_it(client):
    assert heard(say(client, "never-started", "mk1")) == ["mk1"]
    assert heard(say(client, "never-started", "mk2")) == ["mk1", "mk2"]


def test_call_ended_forgets_the_call(client):
    start(client, "c")
    say(client, "c", "mk1")
    response = end(client, "c")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ended"}
    assert heard(say(client, "c", "mk2")) == ["mk2"]


def test_ending_an_unknown_call_is_fine(client):
    assert end(client, "nobody").status_code == 200


def test_type_may_be_left_out_as_the_article_does(client):
    response = client.post("/webhook/transcript", json={"call_id": "c", "transcript": "mk1"})
    assert heard(response) == ["mk1"]


def test_history_is_bounded_to_the_latest_turns(make_app, fake_llm):
    client = make_app(MAX_HISTORY_TURNS=2).test_client()
    for n in range(1, 6):
        reply = say(client, "c", f"mk{n}")
    assert heard(reply) == ["mk3", "mk4", "mk5"]
    assert [m["role"] for m in system_and_turns(fake_llm.requests[-1])[1]] == ["user", "assistant"] * 2 + ["user"]


def test_simultaneous_transcripts_of_one_call_take_turns(client):
    start(client, "c")
    say(client, "c", "mk0")
    replies = {}
    barrier = threading.Barrier(2)

    def turn(marker):
        barrier.wait()
        replies[marker] = heard(say(client, "c", marker))

    threads = [threading.Thread(target=turn, args=(m,)) for m in ("mkX", "mkY")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    first, second = sorted(replies.values(), key=len)
    assert len(first) == 2 and first[0] == "mk0"
    assert second == first + [({"mkX", "mkY"} - {first[1]}).pop()]
    assert heard(say(client, "c", "mkZ")) == second + ["mkZ"]


def test_an_event_sent_again_gets_the_reply_it_missed_and_the_model_is_not_asked_twice(client, fake_llm):
    first = client.post("/webhook/transcript", json={"call_id": "dup", "transcript": "mk1", "event_id": "e1"})
    asked = len(fake_llm.requests)
    again = client.post("/webhook/transcript", json={"call_id": "dup", "transcript": "mk1", "event_id": "e1"})
    assert again.status_code == 200
    assert again.get_json() == {"response": first.get_json()["response"], "duplicate": True}
    assert len(fake_llm.requests) == asked
    later = client.post("/webhook/transcript", json={"call_id": "dup", "transcript": "mk2", "event_id": "e2"})
    assert MARKER.findall(later.get_json()["response"]) == ["mk1", "mk2"]  # taken once, not twice
    bad = client.post("/webhook/transcript", json={"call_id": "dup", "transcript": "mk3", "event_id": "a\nb"})
    assert bad.status_code == 400

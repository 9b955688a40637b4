"""voicebot as the custom LLM of Vapi, ElevenLabs and any OpenAI client: Chat Completions, streamed,
with the call's state voicebot's. Driven by the real ``openai`` SDK against real gunicorn (two workers,
Redis), and through the test client for the edges."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time

import pytest

from voicebot.runtime import runtime_of

TOKEN = "completions-token-0123"
END_TOOLS = {"completions": "end_call", "vapi": "endCall", "elevenlabs": "end_call"}
TRANSFER_TOOLS = {"completions": "transfer_call", "vapi": "transferCall", "elevenlabs": "transfer_to_number"}
PREFIX = {"completions": "/openai/v1", "vapi": "/vapi", "elevenlabs": "/elevenlabs"}


def tools_of(dialect: str) -> list[dict]:
    return [{"type": "function", "function": {"name": name, "description": "the platform's own",
                                              "parameters": {"type": "object", "properties": {}}}}
            for name in (END_TOOLS[dialect], TRANSFER_TOOLS[dialect])]


def naming(dialect: str, call_id: str) -> dict:
    """What each dialect sends to say which call a request is a turn of (as extra body or headers)."""
    if dialect == "vapi":
        return {"extra_body": {"call": {"id": call_id}, "customer": {"number": "+15550001111"}}}
    if dialect == "elevenlabs":
        return {"extra_headers": {"X-Conversation-Id": call_id}}
    return {"extra_headers": {"X-Call-Id": call_id}}


def body_naming(dialect: str, call_id: str) -> tuple[dict, dict]:
    """As ``naming``, for the test client: (extra body fields, headers)."""
    named = naming(dialect, call_id)
    return named.get("extra_body", {}), named.get("extra_headers", {})


def streamed(client, dialect: str, call_id: str, messages: list[dict]) -> tuple[str, list, str | None]:
    """One streamed turn through the openai SDK: its words, its tool calls, its finish reason."""
    stream = client.chat.completions.create(model="voicebot", messages=messages, stream=True,
                                            tools=tools_of(dialect), **naming(dialect, call_id))
    words, calls, finish = [], [], None
    for chunk in stream:
        for choice in chunk.choices:
            if choice.delta.content:
                words.append(choice.delta.content)
            calls += choice.delta.tool_calls or []
            finish = choice.finish_reason or finish
    return "".join(words), calls, finish


@pytest.fixture
def served(gunicorns, fake_llm, redis_url, redis_prefix):
    return gunicorns({"REDIS_URL": redis_url, "REDIS_PREFIX": redis_prefix, "ANTHROPIC_API_KEY": fake_llm.api_key,
                      "ANTHROPIC_BASE_URL": fake_llm.url, "WEBHOOK_TOKEN": TOKEN, "WEB_CONCURRENCY": "2",
                      "WEB_THREADS": "64", "LOG_LEVEL": "WARNING"})


@pytest.mark.parametrize("dialect", ["completions", "vapi"])
def test_twenty_calls_of_four_streamed_turns_each_hold_their_own_history_across_two_workers(
        served, fake_llm, dialect, redis_url, redis_prefix, monkeypatch, tmp_path):
    from openai import OpenAI

    from voicebot.cli import main

    fake_llm.latency = 0.05
    client = OpenAI(base_url=served.url + PREFIX[dialect], api_key=TOKEN, max_retries=0, timeout=20)
    failures: list[str] = []

    def call(n: int) -> None:
        call_id = f"{dialect}-call-{n}"
        messages: list[dict] = [{"role": "system", "content": "the platform's own prompt"}]
        markers: list[str] = []
        for t in range(4):
            marker = f"mk{n}x{t}"
            markers.append(marker)
            words = f"goodbye {marker}" if t == 3 else f"hello {marker}"
            messages.append({"role": "user", "content": words})
            text, calls, finish = streamed(client, dialect, call_id, messages)
            if t < 3:
                if text != "Heard " + " ".join(markers) + "." or calls or finish != "stop":
                    failures.append(f"{call_id} turn {t}: {text!r} {calls} {finish}")
            elif [c.function.name for c in calls] != [END_TOOLS[dialect]] or finish != "tool_calls" or not text:
                failures.append(f"{call_id} goodbye: {text!r} {calls} {finish}")
            messages.append({"role": "assistant", "content": text})

    threads = [threading.Thread(target=call, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures, failures[:5]
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("REDIS_PREFIX", redis_prefix)
    out = tmp_path / "calls.jsonl"
    assert main(["calls", "export", "--output", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    mine = sorted(r["call_id"] for r in records if r["platform"] == dialect)
    assert mine == sorted(f"{dialect}-call-{n}" for n in range(20))
    assert all(r["end_reason"] == "bot_ended" for r in records if r["platform"] == dialect)


def test_a_wrong_token_is_refused_before_any_model_spend(served, fake_llm):
    from openai import AuthenticationError, OpenAI

    for prefix in PREFIX.values():
        client = OpenAI(base_url=served.url + prefix, api_key="not-the-token", max_retries=0)
        with pytest.raises(AuthenticationError) as refused:
            client.chat.completions.create(model="voicebot", messages=[{"role": "user", "content": "hi"}],
                                           user="anyone", extra_headers={"X-Conversation-Id": "c"},
                                           extra_body={"call": {"id": "c"}})
        assert refused.value.status_code == 401
        assert refused.value.body["type"] == "authentication_error"
    assert fake_llm.requests == []


def test_a_request_not_streamed_gets_one_completion_with_usage(served, fake_llm):
    from openai import OpenAI

    client = OpenAI(base_url=served.url + "/openai/v1", api_key=TOKEN, max_retries=0)
    completion = client.chat.completions.create(model="voicebot", user="whole-1",
                                                messages=[{"role": "user", "content": "hello mk7"}])
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == "Heard mk7."
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.total_tokens > 0


def test_usage_comes_in_a_last_chunk_when_asked(served, fake_llm):
    from openai import OpenAI

    client = OpenAI(base_url=served.url + "/openai/v1", api_key=TOKEN, max_retries=0)
    chunks = list(client.chat.completions.create(model="voicebot", stream=True, user="usage-1",
                                                 stream_options={"include_usage": True},
                                                 messages=[{"role": "user", "content": "hello mk8"}]))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert all(c.usage is None for c in chunks[:-1])


# The edges, through the test client, on both stores.

def post(client, dialect: str, call_id: str, messages: list[dict], **extra):
    fields, headers = body_naming(dialect, call_id)
    return client.post(PREFIX[dialect] + "/chat/completions", headers={"Authorization": f"Bearer {TOKEN}", **headers},
                       json={"model": "voicebot", "messages": messages, **fields, **extra})


@pytest.fixture
def completions_app(make_app):
    return make_app(WEBHOOK_TOKEN=TOKEN, ELEVENLABS_WEBHOOK_SECRET="el-secret")


@pytest.mark.parametrize("body, says", [
    ({"model": "x"}, "'messages' is missing"),
    ({"messages": "hi"}, "'messages' must be an array"),
    ({"messages": []}, "'messages' must hold at least 1"),
    ({"messages": [{"content": "hi"}]}, "'role' is missing from 'messages[0]'"),
    ({"messages": [{"role": "user", "content": 5}]}, "'messages[0].content' must be a string or an array"),
    ({"messages": [{"role": "user", "content": "hi"}], "stream": "yes"}, "'stream' must be true or false"),
])
def test_bad_requests_get_an_openai_shaped_400(completions_app, body, says):
    response = completions_app.test_client().post("/openai/v1/chat/completions", json={**body, "user": "bad-1"},
                                                  headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert says in error["message"] and error["type"] == "invalid_request_error"


@pytest.mark.parametrize("dialect, hint", [("completions", "X-Call-Id"), ("vapi", "call.id"),
                                           ("elevenlabs", "system__conversation_id")])
def test_no_call_id_is_a_400_that_says_where_to_put_it(completions_app, fake_llm, dialect, hint):
    response = completions_app.test_client().post(
        PREFIX[dialect] + "/chat/completions", headers={"Authorization": f"Bearer {TOKEN}"},
        json={"model": "x", "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 400 and hint in response.get_json()["error"]["message"]
    assert fake_llm.requests == []


def sse_words(response) -> tuple[str, list[dict]]:
    words, calls = [], []
    for line in response.get_data(as_text=True).split("\n\n"):
        if not line.startswith("data: {"):
            continue
        for choice in json.loads(line[6:])["choices"]:
            words.append(choice["delta"].get("content") or "")
            calls += choice["delta"].get("tool_calls") or []
    return "".join(words), calls


def test_the_first_request_without_words_gets_the_greeting_and_opens_the_call(completions_app, fake_llm):
    client = completions_app.test_client()
    response = post(client, "vapi", "greet-1", [{"role": "system", "content": "theirs"}], stream=True,
                    metadata={"first_name": "Ada"})
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    assert sse_words(response)[0] == completions_app.config["GREETING"]
    session = runtime_of(completions_app).conversations["vapi"].peek("greet-1")
    assert session["caller"] == "+15550001111" and session["variables"] == {"first_name": "Ada"}
    assert fake_llm.requests == []


def test_the_same_request_sent_again_is_the_same_turn(completions_app, fake_llm):
    client = completions_app.test_client()
    messages = [{"role": "user", "content": "hello mk1"}]
    first = sse_words(post(client, "completions", "dup-1", messages, stream=True))[0]
    again = sse_words(post(client, "completions", "dup-1", messages, stream=True))[0]
    assert first == again == "Heard mk1."
    assert len(fake_llm.requests) == 1
    session = runtime_of(completions_app).conversations["completions"].peek("dup-1")
    assert session["turns"] == 1


def test_a_reply_cut_short_by_the_platform_leaves_the_history_with_what_was_heard(completions_app, fake_llm):
    client = completions_app.test_client()
    fake_llm.sentences = 3
    said = sse_words(post(client, "completions", "cut-1", [{"role": "user", "content": "hello mk1"}], stream=True))[0]
    assert said.count(".") >= 2
    heard = said.split(".")[0] + "."
    post(client, "completions", "cut-1", [{"role": "user", "content": "hello mk1"},
                                          {"role": "assistant", "content": heard},
                                          {"role": "user", "content": "and mk2"}], stream=True)
    history = runtime_of(completions_app).conversations["completions"].peek("cut-1")["messages"]
    assert history[1] == {"role": "assistant", "content": heard}
    model_saw = fake_llm.requests[-1]["messages"]
    assert model_saw[1]["content"] == heard and "and mk2" in json.dumps(model_saw[2]["content"])


def test_a_transfer_is_the_platforms_own_tool_only_where_it_is_offered(make_app, fake_llm):
    app = make_app(WEBHOOK_TOKEN=TOKEN, TRANSFER_NUMBER="+15557654321")
    client = app.test_client()
    words, calls = sse_words(post(client, "vapi", "xfer-1", [{"role": "user", "content": "a human please"}],
                                  stream=True, tools=tools_of("vapi")))
    assert [c["function"]["name"] for c in calls] == ["transferCall"]
    assert json.loads(calls[0]["function"]["arguments"]) == {"destination": "+15557654321"}
    post(client, "vapi", "xfer-2", [{"role": "user", "content": "a human please"}], stream=True)
    offered = {t["name"] for t in fake_llm.requests[-1]["tools"]}
    assert "transfer_call" not in offered and "end_call" in offered


def test_elevenlabs_tools_take_their_own_arguments(completions_app, fake_llm):
    words, calls = sse_words(post(completions_app.test_client(), "elevenlabs", "el-1",
                                  [{"role": "user", "content": "goodbye"}], stream=True, tools=tools_of("elevenlabs")))
    assert [c["function"]["name"] for c in calls] == ["end_call"]
    assert set(json.loads(calls[0]["function"]["arguments"])) == {"reason", "message"}


def test_a_model_failure_ends_the_reply_with_the_fallback_line(completions_app, fake_llm):
    fake_llm.fail_rate = 1.0
    words, _ = sse_words(post(completions_app.test_client(), "completions", "fail-1",
                              [{"role": "user", "content": "hello"}], stream=True))
    assert words == completions_app.config["FALLBACK_REPLY"]
    conversation = runtime_of(completions_app).conversations["completions"]
    conversation.end_call("fail-1", reason="hung_up")
    record = next(r for r in runtime_of(completions_app).records.export(0) if r["call_id"] == "fail-1")
    bot = [line for line in record["transcript"] if line["speaker"] == "bot"][-1]
    assert bot["fallback"] is True and bot["error"] == "LLMUnavailable"


def test_vapis_end_of_call_report_ends_the_call_with_one_record(completions_app, fake_llm):
    client = completions_app.test_client()
    post(client, "vapi", "rep-1", [{"role": "user", "content": "hello mk1"}], stream=True)
    report = {"message": {"type": "end-of-call-report", "endedReason": "customer-ended-call", "call": {"id": "rep-1"}}}
    assert client.post("/vapi/events", json=report).status_code == 401
    for _ in range(2):  # sent twice: one record all the same
        answer = client.post("/vapi/events", json=report, headers={"X-Vapi-Secret": TOKEN})
        assert answer.status_code == 200
    ignored = client.post("/vapi/events", json={"message": {"type": "status-update"}},
                          headers={"Authorization": f"Bearer {TOKEN}"})
    assert ignored.get_json() == {"status": "ignored"}
    records = [r for r in runtime_of(completions_app).records.export(0) if r["call_id"] == "rep-1"]
    assert len(records) == 1 and records[0]["platform"] == "vapi" and records[0]["end_reason"] == "hung_up"
    late = sse_words(post(client, "vapi", "rep-1", [{"role": "user", "content": "hello mk1"},
                                                    {"role": "assistant", "content": "Heard mk1."},
                                                    {"role": "user", "content": "more"}],
                          stream=True, tools=tools_of("vapi")))
    assert late[0] == "" and [c["function"]["name"] for c in late[1]] == ["endCall"]


def signed(secret: str, body: bytes, at: int) -> str:
    return f"t={at},v0=" + hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()


def test_elevenlabs_post_call_webhook_is_verified_and_ends_the_call(completions_app, fake_llm):
    client = completions_app.test_client()
    post(client, "elevenlabs", "conv-1", [{"role": "user", "content": "hello mk1"}], stream=True)
    body = json.dumps({"type": "post_call_transcription", "event_timestamp": int(time.time()),
                       "data": {"conversation_id": "conv-1", "status": "done"}}).encode()
    now = int(time.time())
    for header in (None, signed("wrong", body, now), signed("el-secret", body, now - 3600),
                   signed("el-secret", body + b" ", now)):
        refused = client.post("/elevenlabs/post-call", data=body, content_type="application/json",
                              headers={"ElevenLabs-Signature": header} if header else {})
        assert refused.status_code == 401
    assert runtime_of(completions_app).conversations["elevenlabs"].peek("conv-1") is not None
    answer = client.post("/elevenlabs/post-call", data=body, content_type="application/json",
                         headers={"ElevenLabs-Signature": signed("el-secret", body, now)})
    assert answer.get_json() == {"status": "ended"}
    records = [r for r in runtime_of(completions_app).records.export(0) if r["call_id"] == "conv-1"]
    assert len(records) == 1 and records[0]["platform"] == "elevenlabs"


def test_the_reply_leaves_as_the_model_writes_it_and_joins_as_it_was_written(completions_app, fake_llm):
    fake_llm.sentences, fake_llm.sentence_gap = 3, 0.05
    response = post(completions_app.test_client(), "completions", "pieces-1",
                    [{"role": "user", "content": "hello mk1"}], stream=True)
    deltas = [choice["delta"]["content"] for line in response.get_data(as_text=True).split("\n\n")
              if line.startswith("data: {") for choice in json.loads(line[6:])["choices"]
              if choice["delta"].get("content")]
    assert len(deltas) >= 3  # one per read of the model's stream, not one per reply
    said = "".join(deltas)
    assert said == "Heard mk1. I have noted that. Is there anything else I can help you with today?"
    history = runtime_of(completions_app).conversations["completions"].peek("pieces-1")["messages"]
    assert history[-1] == {"role": "assistant", "content": said}

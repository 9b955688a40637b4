"""The fake Messages API is as strict as the real one, so passing against it means something."""

from __future__ import annotations

import anthropic
import pytest


@pytest.fixture
def sdk(fake_llm):
    client = anthropic.Anthropic(api_key=fake_llm.api_key, base_url=fake_llm.url, max_retries=0)
    yield client
    client.close()


GOOD = {"model": "claude-haiku-5-5", "max_tokens": 50, "messages": [{"role": "user", "content": "hi mk1"}]}


@pytest.mark.parametrize("change, words", [
    ({"max_tokens": None}, "max_tokens"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"model": None}, "model"),
    ({"messages": []}, "at least one message"),
    ({"messages": [{"role": "system", "content": "x"}]}, "first message"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}]}, "role"),
    ({"messages": [{"role": "user", "content": ""}]}, "non-empty"),
    ({"messages": [{"role": "user", "content": "   "}]}, "non-empty"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": " "}]}]}, "non-whitespace"),
    ({"temperature_of_the_room": 3}, "Extra inputs"),
])
def test_what_the_real_api_rejects_is_rejected(sdk, change, words):
    body = {**GOOD, **change}
    body = {k: v for k, v in body.items() if v is not None}
    with pytest.raises(anthropic.BadRequestError, match=words):
        sdk.post("/v1/messages", body=body, cast_to=object)


def test_a_wrong_key_is_401(fake_llm):
    client = anthropic.Anthropic(api_key="nope", base_url=fake_llm.url, max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        client.messages.create(**GOOD)


def test_replies_echo_the_markers_of_user_messages_in_order(sdk):
    message = sdk.messages.create(model="claude-haiku-5-5", max_tokens=50, messages=[
        {"role": "user", "content": "first mkA"}, {"role": "assistant", "content": "ok mkNOT"},
        {"role": "user", "content": [{"type": "text", "text": "then mkB and mkC"}]}])
    assert message.content[0].text == "Heard mkA mkB mkC."
    assert message.stop_reason == "end_turn"


def test_streaming_speaks_the_sdk_event_protocol(sdk):
    with sdk.messages.stream(**GOOD) as stream:
        assert stream.get_final_text() == "Heard mk1."


def test_overload_is_529(sdk, fake_llm):
    fake_llm.fail_rate = 1.0
    with pytest.raises(anthropic.InternalServerError) as info:
        sdk.messages.create(**GOOD)
    assert info.value.status_code == 529


def test_an_unknown_model_is_not_found_as_the_real_api_says(fake_llm):
    import anthropic

    sdk = anthropic.Anthropic(api_key=fake_llm.api_key, base_url=fake_llm.url, max_retries=0)
    with pytest.raises(anthropic.NotFoundError, match="not_found_error"):
        sdk.messages.create(model="claude-imaginary-9", max_tokens=50, messages=[{"role": "user", "content": "hi"}])
    sdk.close()


def test_the_fake_uses_tools_as_a_model_would_and_refuses_an_unanswered_tool_use(fake_llm):
    import anthropic

    sdk = anthropic.Anthropic(api_key=fake_llm.api_key, base_url=fake_llm.url, max_retries=0)
    tools = [{"name": "end_call", "description": "d", "input_schema": {"type": "object"}}]
    said = sdk.messages.create(model="claude-haiku-5-5", max_tokens=50, tools=tools,
                               messages=[{"role": "user", "content": "ok goodbye mk1"}])
    (text, use) = said.content
    assert said.stop_reason == "tool_use" and use.type == "tool_use" and use.name == "end_call"
    history = [{"role": "user", "content": "ok goodbye mk1"},
               {"role": "assistant", "content": [{"type": "text", "text": text.text},
                                                 {"type": "tool_use", "id": use.id, "name": use.name,
                                                  "input": use.input}]},
               {"role": "user", "content": "are you there?"}]
    with pytest.raises(anthropic.BadRequestError, match="tool_result"):
        sdk.messages.create(model="claude-haiku-5-5", max_tokens=50, tools=tools, messages=history)
    with pytest.raises(anthropic.BadRequestError, match="must define tools"):
        sdk.messages.create(model="claude-haiku-5-5", max_tokens=50, messages=history)
    sdk.close()

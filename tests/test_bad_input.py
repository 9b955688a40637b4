"""Bad input: a JSON 4xx that says what is wrong, and the call's history untouched."""

from __future__ import annotations

import pytest

from voicebot_testing.fake_llm import MARKER

TRANSCRIPT = "/webhook/transcript"
STARTED = "/webhook/call-started"

# (method, path, body or raw bytes, content type, status, words the message must contain)
CASES = [
    ("POST", TRANSCRIPT, b"not json", "application/json", 400, "not valid JSON"),
    ("POST", TRANSCRIPT, b"", "application/json", 400, "empty"),
    ("POST", TRANSCRIPT, b"\xff\xfe", "application/json", 400, "not valid JSON"),
    ("POST", TRANSCRIPT, b"[1, 2]", "application/json", 400, "JSON object"),
    ("POST", TRANSCRIPT, b'"text"', "application/json", 400, "JSON object"),
    ("POST", TRANSCRIPT, {"transcript": "hi"}, None, 400, "'call_id' is missing"),
    ("POST", TRANSCRIPT, {"call_id": "", "transcript": "hi"}, None, 400, "'call_id' is empty"),
    ("POST", TRANSCRIPT, {"call_id": "   ", "transcript": "hi"}, None, 400, "'call_id' is empty"),
    ("POST", TRANSCRIPT, {"call_id": 42, "transcript": "hi"}, None, 400, "'call_id' must be a string"),
    ("POST", TRANSCRIPT, {"call_id": ["c"], "transcript": "hi"}, None, 400, "'call_id' must be a string"),
    ("POST", TRANSCRIPT, {"call_id": "c" * 129, "transcript": "hi"}, None, 400, "longer than 128"),
    ("POST", TRANSCRIPT, {"call_id": "a\nb", "transcript": "hi"}, None, 400, "control characters"),
    ("POST", TRANSCRIPT, {"call_id": "victim"}, None, 400, "'transcript' is missing"),
    ("POST", TRANSCRIPT, {"call_id": "victim", "transcript": ""}, None, 400, "'transcript' is empty"),
    ("POST", TRANSCRIPT, {"call_id": "victim", "transcript": " \n "}, None, 400, "'transcript' is empty"),
    ("POST", TRANSCRIPT, {"call_id": "victim", "transcript": None}, None, 400, "'transcript' is missing"),
    ("POST", TRANSCRIPT, {"call_id": "victim", "transcript": 7}, None, 400, "must be a string"),
    ("POST", TRANSCRIPT, {"call_id": "victim", "transcript": {"t": 1}}, None, 400, "must be a string"),
    ("POST", TRANSCRIPT, {"call_id": "victim", "transcript": "x" * 2001}, None, 400, "longer than 2000"),
    ("POST", TRANSCRIPT, {"call_id": "victim", "transcript": "hi", "caller_num": 5}, None, 400,
     "'caller_num' must be a string"),
    ("POST", TRANSCRIPT, {"type": "call.exploded", "call_id": "victim", "transcript": "hi"}, None, 400,
     "'type' must be one of"),
    ("POST", TRANSCRIPT, {"type": None, "call_id": "victim", "transcript": "hi"}, None, 400,
     "'type' must be one of"),
    ("POST", TRANSCRIPT, {"type": "call.ended"}, None, 400, "'call_id' is missing"),
    ("POST", STARTED, {"type": "transcript", "call_id": "victim"}, None, 400, "'type' must be one of"),
    ("POST", STARTED, {"caller_num": "+1555"}, None, 400, "'call_id' is missing"),
    ("POST", TRANSCRIPT, {"call_id": "victim", "transcript": "x" * 70_000}, None, 413, "too large"),
    ("POST", TRANSCRIPT, b'{"call_id": "victim", "transcript": "hi \\ud800"}', "application/json", 400,
     "'transcript' is not valid Unicode text"),
    ("POST", TRANSCRIPT, b'{"call_id": "victim", "transcript": "\\udfff\\ud800 x"}', "application/json", 400,
     "not valid Unicode text"),
    ("POST", TRANSCRIPT, b'{"call_id": "vict\\ud800im", "transcript": "hi"}', "application/json", 400,
     "'call_id' is not valid Unicode text"),
    ("POST", TRANSCRIPT, b'{"call_id": "victim", "transcript": "hi", "caller_num": "\\ud83d"}', "application/json",
     400, "'caller_num' is not valid Unicode text"),
    ("POST", TRANSCRIPT, b'{"call_id": "victim", "transcript": "hi", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}",
     "application/json", 400, "nested too deeply"),
    ("GET", TRANSCRIPT, None, None, 405, "not allowed"),
    ("PUT", STARTED, None, None, 405, "not allowed"),
    ("DELETE", TRANSCRIPT, None, None, 405, "not allowed"),
    ("POST", "/webhook/nope", {"call_id": "victim"}, None, 404, "not found"),
    ("GET", "/", None, None, 404, "not found"),
]


@pytest.mark.parametrize("method, path, body, content_type, status, words", CASES,
                         ids=[f"{c[0]} {c[1]} {c[4]} {c[5]}" for c in CASES])
def test_bad_input_gets_a_json_4xx_and_leaves_history_alone(client, method, path, body, content_type,
                                                            status, words):
    assert client.post(TRANSCRIPT, json={"call_id": "victim", "transcript": "mk1"}).status_code == 200
    if isinstance(body, dict):
        response = client.open(path, method=method, json=body)
    else:
        response = client.open(path, method=method, data=body, content_type=content_type)
    assert response.status_code == status
    assert response.mimetype == "application/json"
    payload = response.get_json()
    assert set(payload) == {"error", "message"}
    assert words.lower() in payload["message"].lower()
    assert "Traceback" not in response.get_data(as_text=True)
    after = client.post(TRANSCRIPT, json={"call_id": "victim", "transcript": "mk2"})
    assert MARKER.findall(after.get_json()["response"]) == ["mk1", "mk2"]


def test_body_without_a_content_type_is_still_read_with_the_token(make_app):
    client = make_app(WEBHOOK_TOKEN="t").test_client()
    response = client.post(TRANSCRIPT, data=b'{"call_id": "c", "transcript": "mk1"}',
                           headers={"Authorization": "Bearer t"})
    assert response.status_code == 200
    assert response.get_json()["response"] == "Heard mk1."


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x"])
def test_a_local_trial_takes_only_json_bodies(client, content_type):
    # What a page of another site can send without the browser asking first (a form, a no-cors fetch).
    response = client.post(TRANSCRIPT, data=b'{"call_id": "c", "transcript": "mk1"}', content_type=content_type)
    assert response.status_code == 415 and response.get_json()["error"] == "unsupported_media_type"


def test_body_cap_is_configurable(make_app):
    client = make_app(MAX_BODY_BYTES=100).test_client()
    response = client.post(TRANSCRIPT, json={"call_id": "c", "transcript": "x" * 100})
    assert response.status_code == 413
    assert response.get_json()["error"] == "request_entity_too_large"


def test_a_valid_surrogate_pair_is_a_character_like_any_other(client):
    response = client.post(TRANSCRIPT, data=b'{"call_id": "c", "transcript": "mk1 \\ud83d\\ude00"}',
                           content_type="application/json")
    assert response.status_code == 200 and response.get_json()["response"] == "Heard mk1."


def test_a_chunked_body_over_the_cap_is_refused_not_cut(make_app):
    """Werkzeug checks Content-Length only; a chunked body has none."""
    import io

    client = make_app(MAX_BODY_BYTES=100).test_client()
    body = b'{"call_id": "c", "transcript": "mk1"}' + b" " * 200  # valid JSON once cut at 100 bytes
    response = client.post(TRANSCRIPT, input_stream=io.BytesIO(body),
                           environ_overrides={"wsgi.input_terminated": True},
                           headers={"Transfer-Encoding": "chunked", "Content-Type": "application/json"})
    assert response.status_code == 413
    ok = client.post(TRANSCRIPT, input_stream=io.BytesIO(body[:90]), environ_overrides={"wsgi.input_terminated": True},
                     headers={"Transfer-Encoding": "chunked", "Content-Type": "application/json"})
    assert ok.status_code == 200

"""The article's Go handler ported to Flask as a newcomer would: the yardstick
for voicebot's CPU per turn (bench/campaign.py's ``capacity`` scenario runs
both in the same run).

A dict of histories behind one lock, the anthropic SDK's typed
``messages.create``, and JSON back; no validation, no store, no metrics, no
logging. With more than one worker its histories split between processes,
which is wrong, but costs nothing: only its CPU is measured.

    gunicorn -c /dev/null -k gthread -w 2 --threads 256 bench.naive_port:app
"""

from __future__ import annotations

import os
import threading

import anthropic
from flask import Flask, jsonify, request

SYSTEM = "You are a helpful support agent. Keep responses brief, under 2 sentences, for voice delivery."

app = Flask(__name__)
client = anthropic.Anthropic(api_key=os.environ.get("ANTHROPIC_API_KEY", "test-key"),
                             base_url=os.environ.get("ANTHROPIC_BASE_URL"), max_retries=0)
sessions: dict[str, list[dict]] = {}
sessions_lock = threading.Lock()


@app.post("/webhook/call-started")
def call_started():
    event = request.get_json()
    with sessions_lock:
        sessions.setdefault(event["call_id"], [])
    return jsonify(greeting="Hello! How can I help you today?")


@app.post("/webhook/transcript")
def transcript():
    event = request.get_json()
    if event.get("type") == "call.ended":
        with sessions_lock:
            sessions.pop(event["call_id"], None)
        return jsonify(status="ended")
    with sessions_lock:
        messages = sessions.setdefault(event["call_id"], [])
        messages.append({"role": "user", "content": event["transcript"]})
        history = list(messages)
    reply = client.messages.create(model=os.environ.get("LLM_MODEL", "claude-haiku-5-5"), max_tokens=300,
                                   system=SYSTEM, messages=history)
    text = "".join(block.text for block in reply.content if block.type == "text")
    with sessions_lock:
        messages.append({"role": "assistant", "content": text})
    return jsonify(response=text)


@app.get("/readyz")
def ready():
    return jsonify(status="ready")

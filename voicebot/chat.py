"""``voicebot chat``: be the caller, in a terminal.

Each line you type is what the caller says; the bot's reply is printed with
its latency and any action (hang-up, transfer). ``/hangup`` or end of input
(Ctrl-D) ends the call. It talks to a running voicebot over the article's
contract (``--url``; the token from WEBHOOK_TOKEN) or, without one, to an app
in this process on the embedded defaults. Piped input works the same.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from typing import Any, Callable, TextIO

Post = Callable[[str, dict[str, Any]], tuple[int, dict[str, Any]]]


def http_poster(url: str, token: str) -> Post:
    import json

    from .deadline import within
    from .egress import HTTP

    http = HTTP(headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})})

    def post(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with within(30):
            answer = http.request("POST", url.rstrip("/") + path, body=json.dumps(body).encode(), limit=1 << 20)
        try:
            return answer.status, answer.json()
        except ValueError:
            return answer.status, {"error": "not_json", "message": answer.body[:200].decode("utf-8", "replace")}
    return post


def in_process_poster() -> Post:
    from . import create_app

    client = create_app().test_client()

    def post(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        answer = client.post(path, json=body)
        return answer.status_code, answer.get_json() or {}
    return post


def chat(post: Post, *, lines: TextIO | None = None, out: TextIO | None = None, caller: str = "+15550000000",
         prompt: bool | None = None) -> int:
    lines = sys.stdin if lines is None else lines  # read at the call: a test or a pipe may have replaced them
    out = sys.stdout if out is None else out
    prompt = lines.isatty() if prompt is None else prompt
    call_id = f"chat-{uuid.uuid4().hex[:8]}"
    status, answer = post("/webhook/call-started", {"type": "call.started", "call_id": call_id, "caller_num": caller})
    if status != 200:
        return _failed(out, status, answer)
    print(f"[call {call_id}] bot: {answer.get('greeting')}", file=out, flush=True)
    while True:
        if prompt:
            print("you: ", end="", file=out, flush=True)
        text = lines.readline()
        if not text or text.strip() == "/hangup":
            break
        text = text.strip()
        if not text:
            continue
        started = time.monotonic()
        status, answer = post("/webhook/transcript", {"type": "transcript", "call_id": call_id,
                                                      "caller_num": caller, "transcript": text})
        took = (time.monotonic() - started) * 1000
        if status != 200:
            return _failed(out, status, answer)
        print(f"bot ({took:.0f} ms): {answer.get('response')}", file=out, flush=True)
        action: dict[str, Any] | None = answer.get("action")
        if action:
            done = "hung up" if action["type"] == "hangup" else f"transferred the call to {action.get('to', '')}"
            print(f"[the bot {done}]", file=out, flush=True)
            return 0
    post("/webhook/transcript", {"type": "call.ended", "call_id": call_id})
    print("[you hung up]", file=out, flush=True)
    return 0


def _failed(out: TextIO, status: int, answer: dict[str, Any]) -> int:
    print(f"voicebot answered {status}: {json.dumps(answer)}", file=sys.stderr)
    return 1


def main(url: str | None, verbose: bool = False) -> int:
    if not url and not verbose:
        # The conversation is the output here: the service's log lines (start-up notes that concern a
        # server, a line per turn) would come between "you:" and "bot:". --verbose shows them.
        _quiet_start()
    post = http_poster(url, os.environ.get("WEBHOOK_TOKEN", "")) if url else in_process_poster()
    try:
        return chat(post)
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        if url is None:
            raise
        print(f"voicebot chat: cannot reach {url}: {type(exc).__name__}", file=sys.stderr)
        return 1


def _quiet_start() -> None:
    """voicebot's log handler, made before the app and closed to every line: create_app keeps it."""
    import logging

    from . import logs

    logs.configure_logging("ERROR")
    for handler in logging.getLogger("voicebot").handlers:
        if getattr(handler, "_voicebot", False):
            handler.setLevel(logging.CRITICAL + 1)

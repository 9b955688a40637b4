"""``voicebot chat``: type as the caller, read the bot, in a terminal or through a pipe."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from voicebot.chat import chat, in_process_poster

from .support import ROOT, Gunicorn


def test_piped_into_a_running_voicebot_with_its_token(tmp_path, fake_llm):
    server = Gunicorn({"REDIS_URL": "", "WEB_CONCURRENCY": "1", "ANTHROPIC_API_KEY": fake_llm.api_key,
                       "ANTHROPIC_BASE_URL": fake_llm.url, "WEBHOOK_TOKEN": "chat-token"})
    server.start(tmp_path / "gunicorn.log")
    try:
        done = subprocess.run([sys.executable, "-m", "voicebot.cli", "chat", "--url", server.url],
                              input="mk1 hello\nmk2 again\n", capture_output=True, text=True, timeout=60, cwd=ROOT,
                              env={"WEBHOOK_TOKEN": "chat-token", "PATH": "/usr/bin:/bin"})
    finally:
        server.stop()
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].endswith("bot: Hello! How can I help you today?")
    assert lines[1].startswith("bot (") and lines[1].endswith("ms): Heard mk1.")
    assert lines[2].endswith("ms): Heard mk1 mk2.") and lines[3] == "[you hung up]"


def test_without_the_token_it_says_why_and_fails(tmp_path):
    server = Gunicorn({"REDIS_URL": "", "WEB_CONCURRENCY": "1", "ANTHROPIC_API_KEY": "", "WEBHOOK_TOKEN": "t"})
    server.start(tmp_path / "gunicorn.log")
    try:
        done = subprocess.run([sys.executable, "-m", "voicebot.cli", "chat", "--url", server.url],
                              input="hi\n", capture_output=True, text=True, timeout=60, cwd=ROOT,
                              env={"PATH": "/usr/bin:/bin"})
    finally:
        server.stop()
    assert done.returncode == 1 and "401" in done.stderr and "WEBHOOK_TOKEN" in done.stderr


def test_in_process_the_bot_can_hang_up(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "")
    monkeypatch.setenv("REDIS_URL", "")
    out = io.StringIO()
    assert chat(in_process_poster(), lines=io.StringIO("hello\nok, goodbye\nnever read\n"), out=out) == 0
    printed = out.getvalue().splitlines()
    assert "offline mode" in printed[1] and printed[2].endswith("Thanks for calling. Goodbye!")
    assert printed[3] == "[the bot hung up]"


def test_try_voipbin_places_a_call_and_shows_what_is_said(monkeypatch):
    from voicebot_testing.try_voipbin import run

    monkeypatch.setenv("ANTHROPIC_API_KEY", "")
    out = io.StringIO()
    assert run(lines=io.StringIO("where is my order?\nok, goodbye\n"), out=out) == 0
    printed = out.getvalue().splitlines()
    assert printed[0].startswith("[VoIPBin] incoming call ")
    assert printed[1] == "voicebot says into the call: Hello! How can I help you today?"
    assert printed[2].startswith("voicebot says into the call: You said: where is my order.")
    assert printed[3] == "voicebot says into the call: Thanks for calling. Goodbye!"
    assert printed[4] == "[VoIPBin] voicebot hung up the call"


def test_chat_in_this_process_is_quiet_unless_asked(monkeypatch, capsys):
    import io
    import logging
    import sys

    from voicebot.cli import main

    for name in ("REDIS_URL", "ANTHROPIC_API_KEY", "WEBHOOK_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    voicebot_logger = logging.getLogger("voicebot")
    handlers = [h for h in voicebot_logger.handlers if getattr(h, "_voicebot", False)]
    levels = [h.level for h in handlers]
    try:
        monkeypatch.setattr(sys, "stdin", io.StringIO("where is my order?\n"))
        assert main(["chat"]) == 0
        out, err = capsys.readouterr()
        assert "bot (" in out and "[you hung up]" in out
        assert err == ""  # no start-up notes for a server, no line per turn
    finally:
        for handler, level in zip(handlers, levels):
            handler.setLevel(level)
        for handler in voicebot_logger.handlers:
            if getattr(handler, "_voicebot", False):
                handler.setLevel(logging.NOTSET)


@pytest.mark.parametrize("mode", ["gather", "relay"])
def test_try_twilio_makes_you_the_caller_in_both_modes(monkeypatch, mode):
    from voicebot_testing.try_twilio import run

    monkeypatch.setenv("ANTHROPIC_API_KEY", "")
    monkeypatch.delenv("REDIS_URL", raising=False)
    out = io.StringIO()
    assert run(mode, lines=io.StringIO("where is my order?\nok, goodbye\nnever read\n"), out=out) == 0
    printed = out.getvalue().splitlines()
    assert printed[0].startswith("[Twilio] incoming call CA") and f"({mode} mode)" in printed[0]
    assert printed[1] == "voicebot says: Hello! How can I help you today?"
    assert printed[2].startswith("voicebot says: You said: where is my order.")
    assert printed[3] == "voicebot says: Thanks for calling. Goodbye!"
    assert printed[4] == "[Twilio] voicebot hung up the call"

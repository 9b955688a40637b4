"""Every command that reads settings, fed each kind of bad setting or file: one line naming it, never a traceback."""

from __future__ import annotations

import io
import sys

import pytest

from voicebot.cli import main

from .support import free_port

BAD = [
    ({"REDIS_URL": "nonsense"}, "REDIS_URL"),
    ({"WEB_THREADS": "abc"}, "WEB_THREADS"),
    ({"LLM_TIMEOUT_SECONDS": "100"}, "LLM_TIMEOUT_SECONDS"),
    ({"TOOLS_FILE": "@half-written", "TOOLS_SECRET": "s"}, "TOOLS_FILE"),
    ({"REDIS_URL": "redis+sentinel://127.0.0.1:1"}, "REDIS_URL"),
]
COMMANDS = [
    ["chat"],
    ["try", "voipbin"],
    ["try", "twilio", "--mode", "relay"],
    ["serve", "--check-config"],
    ["calls", "export"],
    ["voipbin", "setup", "--public-url", "https://bot.example.com", "--number", "+15550001111"],
]


@pytest.mark.parametrize("settings, named", BAD, ids=[b[1] + "=" + next(iter(b[0].values())) for b in BAD])
@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c[:2]) for c in COMMANDS])
def test_a_bad_setting_is_one_line_and_exit_2(command, settings, named, monkeypatch, capsys, tmp_path):
    for name in ("REDIS_URL", "WEBHOOK_TOKEN", "ANTHROPIC_API_KEY", "TOOLS_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VOIPBIN_ACCESS_KEY", "k")
    monkeypatch.setenv("VOIPBIN_API_URL", f"http://127.0.0.1:{free_port()}")  # nothing reached, should it try
    for name, value in settings.items():
        if value == "@half-written":
            value = str(tmp_path / "tools.json")
            (tmp_path / "tools.json").write_text('{"tools": [{"name": "lookup", "url": ')
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    status = main(command)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if named == "WEB_THREADS" and command[0] in ("voipbin",):
        assert status in (0, 1, 2)  # it needs no thread setting; any failure is one line
        return
    assert status == 2, err
    assert named in err and len(err.strip().splitlines()) <= 3, err


@pytest.mark.parametrize("settings, named", BAD, ids=[b[1] for b in BAD])
def test_commands_that_read_no_settings_are_not_upset_by_bad_ones(settings, named, monkeypatch, capsys, tmp_path):
    for name, value in settings.items():
        monkeypatch.setenv(name, str(tmp_path / "tools.json") if value == "@half-written" else value)
    assert main(["nginx-config", "--server-name", "bot.example.com"]) == 0
    assert "server 127.0.0.1:8000" in capsys.readouterr().out
    assert main(["simulate", f"http://127.0.0.1:{free_port()}", "--wait", "0.2"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1

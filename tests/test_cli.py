"""The voicebot command explains itself."""

from __future__ import annotations

import logging
import socket

import pytest

from voicebot import create_app
from voicebot.cli import build_parser, main

from .conftest import app_config
from .support import ROOT, free_port


def test_a_bare_voicebot_lists_the_commands(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    for command in ("serve", "chat", "try", "simulate", "voipbin", "calls", "fake-llm", "nginx-config"):
        assert command in out


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("voicebot ")


def test_every_option_is_described_with_its_default():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # argparse keeps them here
    for name, command in commands.items():
        formatter = command._get_formatter()
        for action in command._actions:
            if not action.option_strings or action.dest == "help":
                continue
            assert action.help, f"voicebot {name} {action.option_strings[0]} has no help"
            if action.default not in (None, False, "", "==SUPPRESS=="):
                shown = formatter._get_help_string(action)
                assert "default" in shown, (name, action.option_strings, shown)


def test_serve_checks_the_config_as_a_real_start_would(capsys, monkeypatch):
    monkeypatch.setenv("REDIS_URL", "")
    assert main(["serve", "--port", "9123", "--check-config"]) == 0
    assert "listening on 127.0.0.1:9123" in capsys.readouterr().out
    monkeypatch.setenv("WEB_CONCURRENCY", "2")  # two workers with the memory store: a real start refuses
    assert main(["serve", "--check-config"]) == 2
    assert "REDIS_URL" in capsys.readouterr().err


def test_a_busy_port_fails_at_once_in_one_line(capsys, monkeypatch):
    monkeypatch.setenv("REDIS_URL", "")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert main(["serve", "--port", str(taken.getsockname()[1])]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is in use" in err[0]


@pytest.mark.parametrize("half", [{"VOIPBIN_WEBHOOK_SECRET": "s"}, {"VOIPBIN_ACCESS_KEY": "k"}])
def test_a_half_configured_voipbin_is_a_warning(fake_llm, caplog, half):
    with caplog.at_level(logging.WARNING, logger="voicebot"):
        create_app(app_config(fake_llm, **half))
    missing = "VOIPBIN_ACCESS_KEY" if "VOIPBIN_WEBHOOK_SECRET" in half else "VOIPBIN_WEBHOOK_SECRET"
    assert any(r.levelno == logging.WARNING and missing in r.getMessage() for r in caplog.records)


def test_compose_nginx_site_is_the_one_the_template_writes():
    """Regenerate with: python -c 'from voicebot.deploy import compose_nginx_config as c; print(c(), end="")'
    > voicebot/deploy/compose-nginx.conf"""
    from voicebot.deploy import compose_nginx_config

    written = (ROOT / "voicebot" / "deploy" / "compose-nginx.conf").read_text()
    assert written.strip() == compose_nginx_config().strip()
    assert "server voicebot:8000 resolve;" in written and "voicebot_no_query" in written


def test_check_config_connect_says_what_each_dependency_answered(monkeypatch, capsys, fake_llm, redis_url, voipbin):
    for name in ("WEBHOOK_TOKEN", "TWILIO_AUTH_TOKEN", "TOOLS_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", fake_llm.api_key)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake_llm.url)
    monkeypatch.setenv("VOIPBIN_ACCESS_KEY", voipbin.access_key)
    monkeypatch.setenv("VOIPBIN_API_URL", voipbin.api_url)
    assert main(["serve", "--check-config", "--connect"]) == 0
    out = capsys.readouterr().out
    assert "ok     session store, Redis (127.0.0.1:" in out and "answers PING" in out
    assert "ok     model claude-" in out and "no tokens spent" in out
    assert "ok     VoIPBin: the access key is accepted" in out
    assert fake_llm.api_key not in out and voipbin.access_key not in out

    monkeypatch.setenv("ANTHROPIC_API_KEY", "wrong-key")
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    assert main(["serve", "--check-config", "--connect"]) == 1
    out = capsys.readouterr().out
    assert "FAILED session store" in out and "FAILED model" in out and "rejected ANTHROPIC_API_KEY (401)" in out
    # Without --connect nothing is reached: the settings alone are fine.
    assert main(["serve", "--check-config"]) == 0

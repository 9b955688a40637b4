"""Health endpoints, configuration from the environment, the worker-model guard."""

from __future__ import annotations

import pytest

from voicebot import close_app, config, create_app
from voicebot.exceptions import ConfigError
from voicebot.platforms import DEFAULTS
from voicebot.llm import OfflineResponder
from voicebot.runtime import runtime_of

from .conftest import app_config
from .support import free_port


def test_healthz_and_readyz(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["status"] == "ready"


def test_readyz_is_503_when_redis_does_not_answer(fake_llm):
    app = create_app(app_config(fake_llm, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
                                REDIS_TIMEOUT_SECONDS=0.3))
    client = app.test_client()
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.get_json()["status"] == "unavailable"
    turn = client.post("/webhook/transcript", json={"call_id": "c", "transcript": "hi"})
    assert turn.status_code == 503
    assert turn.get_json()["error"] == "store_unavailable"
    assert turn.headers["Retry-After"] == "1"


def test_environment_is_read_and_parsed(monkeypatch, fake_llm):
    monkeypatch.setenv("SESSION_TTL_SECONDS", "60")
    monkeypatch.setenv("GREETING", "Hi from env")
    monkeypatch.setenv("LLM_TIMEOUT_SECONDS", "1.5")
    app = create_app({"ANTHROPIC_API_KEY": "", "REDIS_URL": ""})
    assert app.config["SESSION_TTL_SECONDS"] == 60
    assert app.config["LLM_TIMEOUT_SECONDS"] == 1.5
    assert app.test_client().post("/webhook/call-started", json={"call_id": "c"}).get_json() == {
        "greeting": "Hi from env"}


def test_no_key_means_the_offline_responder(caplog):
    app = create_app({"ANTHROPIC_API_KEY": "", "REDIS_URL": ""})
    assert isinstance(runtime_of(app).conversations["article"].llm.inner, OfflineResponder)
    reply = app.test_client().post("/webhook/transcript", json={"call_id": "c", "transcript": "Hello."})
    assert "offline" in reply.get_json()["response"]


@pytest.mark.parametrize("name, value", [
    ("SESSION_TTL_SECONDS", "soon"), ("SESSION_TTL_SECONDS", "0"), ("LLM_TIMEOUT_SECONDS", "-1"),
    ("REDIS_URL", "localhost:6379"), ("LOG_LEVEL", "LOUD"),
    # Sent in a header: a line break would add headers of its own.
    ("ANTHROPIC_API_KEY", "sk-1\r\nX-Evil: 1"), ("VOIPBIN_ACCESS_KEY", "key; other=1"),
])
def test_bad_settings_fail_at_start_with_the_name(name, value):
    from voicebot.platforms import load_config

    with pytest.raises(ConfigError, match=name):
        load_config({name: value})


def test_a_key_pasted_with_whitespace_around_it_is_taken_without_it():
    assert config.from_environ({"ANTHROPIC_API_KEY": " sk-ant-1\n"})["ANTHROPIC_API_KEY"] == "sk-ant-1"


def test_a_bad_secret_is_not_echoed():
    def reject(value):
        raise ValueError("bad")

    registry = (config.Setting("X_KEY", "", reject, "", secret=True),)
    with pytest.raises(ConfigError) as info:
        config.from_environ({"X_KEY": "sk-very-secret"}, registry)
    assert "sk-very-secret" not in str(info.value)


def test_worker_defaults_and_guard():
    settings = dict(DEFAULTS)
    assert config.worker_count(settings) == 1
    settings["REDIS_URL"] = "redis://x"
    assert config.worker_count(settings, cpu_count=1) == 2
    assert config.worker_count(settings, cpu_count=4) == 4
    config.check_worker_model(settings, 4)
    settings["REDIS_URL"] = ""
    config.check_worker_model(settings, 1)
    with pytest.raises(ConfigError, match="REDIS_URL"):
        config.check_worker_model(settings, 2)


def test_lease_and_wait_derive_from_the_llm_deadline():
    settings = dict(DEFAULTS, LLM_TIMEOUT_SECONDS=3.0)
    assert config.lock_lease_seconds(settings) == 5.0
    assert config.lock_wait_seconds(settings) == 6.0
    settings.update(LOCK_LEASE_SECONDS=10.0, LOCK_WAIT_SECONDS=2.0)
    assert config.lock_lease_seconds(settings) == 10.0
    assert config.lock_wait_seconds(settings) == 2.0


def test_every_platform_registers_itself_and_the_core_imports_none():
    """A platform is one package in voicebot.platforms' list; nothing in the core names one."""
    import ast

    from voicebot.platforms import PLATFORMS
    from .support import ROOT

    assert [p.name for p in PLATFORMS] == [
        "article", "voipbin", "twilio", "completions", "vapi", "elevenlabs", "retell", "telnyx", "outbound"]
    platform_packages = {p.name for p in PLATFORMS}
    core = [path for path in (ROOT / "voicebot").rglob("*.py")
            if path.relative_to(ROOT / "voicebot").parts[0] not in platform_packages | {"cli"}
            and path.name != "platforms.py"]
    for path in core:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [alias.name for alias in node.names]
                assert not any(n.split(".")[0] in platform_packages and (node.level or n.startswith("voicebot"))
                               for n in names if n), f"{path.name} imports a platform: {ast.unparse(node)}"


def test_close_app_lets_go_of_every_client_once_and_survives_a_failing_one(make_app, caplog):
    app = make_app()
    closed = []
    runtime_of(app).closers[:0] = [lambda: closed.append("first")]
    runtime_of(app).closers.append(lambda: 1 / 0)
    close_app(app)
    close_app(app)
    assert closed == ["first"]
    assert "closing" in caplog.text

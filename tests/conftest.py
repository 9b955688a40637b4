"""Fixtures: the app (with either store), a client, Redis, and the fake Messages API."""

from __future__ import annotations

import logging
import os
import uuid

import pytest
import redis

from voicebot import close_app, create_app
from voicebot_testing.fake_llm import FakeMessagesAPI
from voicebot_testing.fake_openai import FakeChatCompletions

from .support import Gunicorn, RedisServer, redis_server_binary

STORES = ["memory", "redis"]
TEST_REDIS_VARIABLE = "VOICEBOT_TEST_REDIS_URL"

# The tests never touch a Redis they did not start unless VOICEBOT_TEST_REDIS_URL
# names one for them: a REDIS_URL exported for the README's "Scaling out" (a
# shared or staging Redis, say) is neither used nor passed on to the servers
# the tests start.
os.environ.pop("REDIS_URL", None)


def pytest_sessionstart(session):
    """Check the tests' Redis once, up front, and say plainly what is wrong."""
    given = os.environ.get(TEST_REDIS_VARIABLE)
    try:
        if given:
            client = redis.Redis.from_url(given, socket_connect_timeout=2, socket_timeout=2)
            client.ping()
            client.close()
        else:
            redis_server_binary()
    except (redis.RedisError, ValueError) as exc:
        pytest.exit(f"{TEST_REDIS_VARIABLE}={given} does not answer ({type(exc).__name__}); unset it to let "
                    "the tests start a Redis of their own", returncode=1)
    except RuntimeError as exc:
        pytest.exit(str(exc), returncode=1)


@pytest.fixture(autouse=True)
def voicebot_logs_reach_caplog(monkeypatch):
    """voicebot's logger does not propagate (gunicorn's root handler would print each line twice),
    so caplog, which listens on the root logger, would see its records only by accident of test order."""
    from voicebot import logs

    configure = logs.configure_logging

    def configure_and_propagate(level: str) -> None:
        configure(level)
        logging.getLogger("voicebot").propagate = True

    monkeypatch.setattr(logs, "configure_logging", configure_and_propagate)
    logging.getLogger("voicebot").propagate = True
    yield


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory):
    """A private Redis Cluster (3 masters, 3 replicas, 2 s node timeout), for the whole session."""
    from voicebot_testing.processes import RedisClusterServers

    cluster = RedisClusterServers(tmp_path_factory.mktemp("cluster")).start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def redis_sentinel(tmp_path_factory):
    """A private master, replica and three Sentinels, for the whole session."""
    from voicebot_testing.processes import RedisSentinelSet

    sentinels = RedisSentinelSet(tmp_path_factory.mktemp("sentinel")).start()
    yield sentinels
    sentinels.stop()


@pytest.fixture(scope="session")
def redis_url():
    """A private redis-server that these tests start, or the one VOICEBOT_TEST_REDIS_URL names."""
    if os.environ.get(TEST_REDIS_VARIABLE):
        yield os.environ[TEST_REDIS_VARIABLE]
        return
    server = RedisServer().start()
    yield server.url
    server.stop()


@pytest.fixture
def redis_prefix(redis_url):
    """A key namespace of this test's own, removed afterwards (REDIS_URL may be shared)."""
    prefix = f"vbtest-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def voipbin():
    """A strict fake of VoIPBin's REST API on loopback (and its event sender)."""
    from voicebot_testing.fake_voipbin import FakeVoipbin

    with FakeVoipbin() as fake:
        yield fake


@pytest.fixture
def gunicorns(tmp_path):
    """Start gunicorn with an environment, as often as a test needs; every one is stopped afterwards."""
    started: list[Gunicorn] = []

    def start(env: dict[str, str]) -> Gunicorn:
        server = Gunicorn(env).start(tmp_path / f"gunicorn-{len(started)}.log")
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


# The number voicebot answers on VoIPBin in the tests, and its fetch token.
OUR_NUMBER = "+15559870000"
FETCH_TOKEN = "fetch-token-0123"


@pytest.fixture
def make_voipbin_app(make_app, voipbin):
    def make(**overrides):
        settings = {
            "VOIPBIN_WEBHOOK_SECRET": voipbin.webhook_secret,
            "VOIPBIN_ACCESS_KEY": voipbin.access_key,
            "VOIPBIN_API_URL": voipbin.api_url,
            "VOIPBIN_TIMEOUT_SECONDS": 1.0,
            "VOIPBIN_NUMBERS": (OUR_NUMBER,),
            "VOIPBIN_FETCH_TOKEN": FETCH_TOKEN,
            **overrides,
        }
        return make_app(**settings)
    return make


@pytest.fixture(scope="session")
def fake_llm_server():
    with FakeMessagesAPI() as server:
        yield server


@pytest.fixture
def fake_llm(fake_llm_server):
    fake_llm_server.reset()
    yield fake_llm_server
    fake_llm_server.reset()


@pytest.fixture(scope="session")
def fake_openai_server():
    with FakeChatCompletions() as server:
        yield server


@pytest.fixture
def fake_openai(fake_openai_server):
    fake_openai_server.reset()
    yield fake_openai_server
    fake_openai_server.reset()


@pytest.fixture(params=["anthropic", "openai"])
def any_model(request, fake_llm_server, fake_openai_server):
    """The fake of either provider's API: a module whose tests hold for both overrides ``fake_llm`` with it."""
    fake = fake_llm_server if request.param == "anthropic" else fake_openai_server
    fake.reset()
    yield fake
    fake.reset()


def model_settings(fake: FakeMessagesAPI | FakeChatCompletions) -> dict:
    """The settings that point voicebot at ``fake``: the Messages API's, or Chat Completions' (LLM_PROVIDER=openai)."""
    if isinstance(fake, FakeChatCompletions):
        return {"LLM_PROVIDER": "openai", "OPENAI_API_KEY": fake.api_key, "OPENAI_BASE_URL": fake.url,
                "LLM_MODEL": fake.models[0]}
    return {"ANTHROPIC_API_KEY": fake.api_key, "ANTHROPIC_BASE_URL": fake.url}


def app_config(fake: FakeMessagesAPI | FakeChatCompletions, **overrides):
    """Settings for a test app: the real client pointed at the fake, short deadlines."""
    return {
        "REDIS_URL": "",
        **model_settings(fake),
        "LLM_TIMEOUT_SECONDS": 2.0,
        "LOG_LEVEL": "INFO",
        **overrides,
    }


@pytest.fixture(params=STORES)
def store_kind(request):
    return request.param


@pytest.fixture
def make_app(request, fake_llm, store_kind):
    """Build apps on the chosen store; every app made here is closed afterwards."""
    made = []

    def make(**overrides):
        if store_kind == "redis":
            overrides.setdefault("REDIS_URL", request.getfixturevalue("redis_url"))
            overrides.setdefault("REDIS_PREFIX", request.getfixturevalue("redis_prefix"))
        app = create_app(app_config(fake_llm, **overrides))
        made.append(app)
        return app

    yield make
    for app in made:
        close_app(app)


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def browser(tmp_path):
    """Debian's chromium, headless, driven by selenium (tests that use it are marked ``needs_browser``)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from .support import CHROMEDRIVER, CHROMIUM

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()

"""Fixtures: the app (with either store), a client, Redis, and the fake Messages API."""

from __future__ import annotations

import os
import uuid

import pytest
import redis

from voicebot import create_app
from voicebot.fake_llm import FakeMessagesAPI

from .support import RedisServer

STORES = ["memory", "redis"]


@pytest.fixture(scope="session")
def redis_url():
    """REDIS_URL when set; otherwise a private redis-server that these tests start."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
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


@pytest.fixture(scope="session")
def fake_llm_server():
    with FakeMessagesAPI() as server:
        yield server


@pytest.fixture
def fake_llm(fake_llm_server):
    fake_llm_server.reset()
    yield fake_llm_server
    fake_llm_server.reset()


def app_config(fake: FakeMessagesAPI, **overrides):
    """Settings for a test app: the real SDK pointed at the fake, short deadlines."""
    return {
        "REDIS_URL": "",
        "ANTHROPIC_API_KEY": fake.api_key,
        "ANTHROPIC_BASE_URL": fake.url,
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
        conversation = app.extensions["voicebot"]
        conversation.store.close()
        conversation.llm.close()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()

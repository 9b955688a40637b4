"""Slow and idle clients against the shipped nginx configuration in front of the Procfile's gunicorn.

gunicorn's gthread worker waits for a request with no deadline: a few
sockets that send one byte and stop starve it. On a VM nginx sits in front
(``voicebot nginx-config``), holds every slow, silent or idle client itself,
and hands gunicorn only whole requests. This drill runs real nginx (Debian's
package) with that configuration, opens 200 slowloris and 2,000 idle
connections to it, and checks that real turns are answered meanwhile, at
about the latency they had before. It prints one ``DRILL`` line.
"""

from __future__ import annotations

import resource
import socket
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from voicebot_testing.fake_llm import MARKER

from .support import Gunicorn, Nginx, needs_nginx, procfile_command, wait_for

pytestmark = needs_nginx

TOKEN = "drill-token"
SLOWLORIS = 200
IDLE = 2000


@pytest.fixture
def deployed(tmp_path, redis_url, redis_prefix, fake_llm):
    """The Procfile's gunicorn (2 workers, Redis) behind nginx with the shipped site; nginx's URL."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 16384), hard))
    fake_llm.latency = 0.05
    server = Gunicorn({"REDIS_URL": redis_url, "REDIS_PREFIX": redis_prefix, "ANTHROPIC_API_KEY": fake_llm.api_key,
                       "ANTHROPIC_BASE_URL": fake_llm.url, "WEB_CONCURRENCY": "2", "WEB_THREADS": "32",
                       "WEBHOOK_TOKEN": TOKEN, "LOG_LEVEL": "WARNING"},
                      command=procfile_command()).start(tmp_path / "gunicorn.log")
    nginx = Nginx(tmp_path, [server.port]).start()
    try:
        yield nginx.url, server, nginx.access_log
    finally:
        nginx.stop()
        server.stop()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def call(url: str, n: int, turns: int = 3) -> list[float]:
    """One call of a few turns through nginx; each turn's latency, with its reply checked."""
    latencies = []
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {TOKEN}"
        for turn in range(turns):
            started = time.monotonic()
            reply = session.post(url + "/webhook/transcript", timeout=30,
                                 json={"call_id": f"drill-{n}", "transcript": f"mk{n}x{turn}"})
            latencies.append(time.monotonic() - started)
            assert reply.status_code == 200, reply.text
            assert MARKER.findall(reply.json()["response"]) == [f"mk{n}x{t}" for t in range(turn + 1)]
    return latencies


def open_attack(port: int) -> list[socket.socket]:
    """Slowloris (half a request line and headers, or headers and part of a body, then nothing) and idle sockets."""
    held = []
    for n in range(SLOWLORIS):
        sock = socket.create_connection(("127.0.0.1", port))
        if n % 2:
            sock.sendall(b"POST /webhook/transcript HTTP/1.1\r\nHost: x\r\nX-a: ")
        else:
            sock.sendall(b"POST /webhook/transcript HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{\"call")
        held.append(sock)
    for _ in range(IDLE):
        held.append(socket.create_connection(("127.0.0.1", port)))
    return held


def test_slowloris_and_idle_connections_leave_turns_answered(deployed):
    url, server, _ = deployed
    with ThreadPoolExecutor(10) as pool:
        before = [t for ts in pool.map(lambda n: call(url, n), range(10)) for t in ts]

    port = int(url.rsplit(":", 1)[1])
    held = open_attack(port)
    try:
        with ThreadPoolExecutor(10) as pool:
            during = [t for ts in pool.map(lambda n: call(url, 100 + n), range(20)) for t in ts]
        # gunicorn saw none of it: it still answers directly, at once.
        assert requests.get(server.url + "/healthz", timeout=2).ok
    finally:
        for sock in held:
            sock.close()

    p50_before, p50_during = statistics.median(before), statistics.median(during)
    print(f"\nDRILL slow-clients: {SLOWLORIS} slowloris + {IDLE} idle connections to nginx; "
          f"{len(during)} turns all answered; latency p50 {p50_before * 1000:.0f} ms before, "
          f"{p50_during * 1000:.0f} ms during (max {max(during) * 1000:.0f} ms)")
    # Without nginx the same attack holds every turn until the client gives up; the bound
    # is that failure mode's, far above a loaded machine's normal latency.
    assert max(during) < 5.0


def test_tokens_in_query_strings_never_reach_the_access_log(deployed):
    url, _, access_log = deployed
    fetch_secret = "fetch-secret-in-the-url"
    assert requests.get(f"{url}/talk?token={TOKEN}", timeout=5).status_code == 200
    requests.post(f"{url}/webhook/voipbin/fetch?token={fetch_secret}", json={}, timeout=5)
    # nginx writes each line after its answer; the log also holds the start-up /healthz probes.
    wait_for(lambda: access_log.exists() and "/webhook/voipbin/fetch " in access_log.read_text(),
             what="the fetch's access log line")
    logged = access_log.read_text()
    assert "GET /talk " in logged and "/webhook/voipbin/fetch " in logged
    assert TOKEN not in logged and fetch_secret not in logged and "token=" not in logged

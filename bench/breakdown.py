"""Where a turn's CPU goes, layer by layer, measured with time.process_time.

    .venv/bin/python bench/breakdown.py

Each row adds a layer to the one above it, so the differences are what that
layer costs: the model call (voicebot's egress layer, the SDK's headers), the Redis store, the
conversation core, Flask (the WSGI app called directly), and gunicorn (one
worker, one thread, requests one after the other over a kept-alive
connection). For a profile of a worker under load, attach py-spy to it while
bench/campaign.py runs:  py-spy record --gil -p <worker pid> -f raw -o turn.txt
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from voicebot_testing.processes import RedisServer, free_port, wait_for  # noqa: E402
from voicebot_testing.simulate import HTTPConnection  # noqa: E402
from voicebot.runtime import runtime_of  # noqa: E402

ROUNDS = 3000
HISTORY = [m for n in range(5) for m in (
    {"role": "user", "content": f"Caller turn mk{n}, please."},
    {"role": "assistant", "content": "Heard it. I can help with that. Could you give me a bit more detail?"},
)]


def cpu_ms(action, rounds: int = ROUNDS) -> float:
    for n in range(min(200, rounds)):
        action(n)
    started = time.process_time()
    for n in range(rounds):
        action(n)
    return 1000 * (time.process_time() - started) / rounds


def main() -> None:
    llm_port = free_port()
    fake = subprocess.Popen([sys.executable, "-m", "voicebot.cli", "fake-llm", "--port", str(llm_port)],
                            stdout=subprocess.DEVNULL)
    redis = RedisServer().start()
    try:
        wait_for(lambda: socket.create_connection(("127.0.0.1", llm_port)).close() or True, what="fake LLM")
        rows = measure(f"http://127.0.0.1:{llm_port}", redis.url)
    finally:
        fake.terminate()
        redis.stop()
    print("| layer | CPU ms per turn | of which this layer |")
    print("|---|---|---|")
    previous = 0.0
    for name, value in rows:
        print(f"| {name} | {value:.3f} | {f'{value - previous:+.3f}' if name.startswith(('+', 'model')) else ''} |")
        previous = value


def measure(llm_url: str, redis_url: str) -> list[tuple[str, float]]:
    from voicebot import create_app

    settings = {"REDIS_URL": redis_url, "REDIS_PREFIX": "breakdown", "ANTHROPIC_API_KEY": "test-key",
                "ANTHROPIC_BASE_URL": llm_url, "LOG_LEVEL": "INFO"}
    app = create_app(settings)
    conversation = runtime_of(app).conversations["article"]
    import logging

    logging.getLogger("voicebot").handlers[0].stream = open("/dev/null", "w")
    rows = []

    def model(n):
        conversation.llm.reply("You are a helpful agent.", HISTORY + [{"role": "user", "content": f"mk{n}"}], 5)
    rows.append(("model call (egress on libcurl, the SDK's headers)", cpu_ms(model)))

    session = {"call_id": "c", "messages": HISTORY, "channel": {}, "events": [], "turns": 5}

    def store(n):
        with conversation.store.locked(f"store-{n % 50}", 1) as record:
            record.save(session, release=True)
    rows.append(("+ Redis store (lock and read, write and release)", rows[-1][1] + cpu_ms(store)))

    def core(n):
        conversation.take_turn(f"core-{n % 50}", f"Caller turn mk{n}, please.")
    rows.append(("+ conversation core (= take_turn)", cpu_ms(core)))

    from werkzeug.test import EnvironBuilder

    bodies = [json.dumps({"call_id": f"wsgi-{n % 50}", "transcript": f"Caller turn mk{n}, please."})
              for n in range(ROUNDS + 200)]

    def wsgi(n):
        # From loopback, as the local trial's requests are (no WEBHOOK_TOKEN here).
        environ = EnvironBuilder(method="POST", path="/webhook/transcript", data=bodies[n],
                                 content_type="application/json",
                                 environ_base={"REMOTE_ADDR": "127.0.0.1"}).get_environ()
        b"".join(app.wsgi_app(environ, lambda status, headers, exc_info=None: None))
    builder_cost = cpu_ms(lambda n: EnvironBuilder(method="POST", path="/webhook/transcript", data=bodies[n],
                                                   content_type="application/json",
                                                   environ_base={"REMOTE_ADDR": "127.0.0.1"}).get_environ())
    rows.append(("+ Flask (the WSGI app, called directly)", cpu_ms(wsgi) - builder_cost))
    rows.append(("+ gunicorn (1 worker, 1 thread, kept-alive connection)", gunicorn_turn(settings)))
    rows.append(("naive Flask port (bench/naive_port.py), same gunicorn shape", gunicorn_turn(
        settings, [sys.executable, "-m", "gunicorn", "-c", "/dev/null", "-k", "gthread", "--threads", "1",
                   "bench.naive_port:app"])))
    return rows


def gunicorn_turn(settings: dict, command: list[str] | None = None) -> float:
    sys.path.insert(0, str(ROOT / "bench"))
    from campaign import cpu_seconds, process_tree

    from voicebot_testing.processes import Gunicorn

    server = Gunicorn({**settings, "WEB_CONCURRENCY": "1", "WEB_THREADS": "1"}, command=command)
    server.start(Path("/tmp") / f"breakdown-{uuid.uuid4().hex[:6]}.log")
    try:
        pids = process_tree(server.process.pid)

        async def turns(rounds: int) -> None:
            connection = HTTPConnection(server.url)
            for n in range(rounds):
                body = json.dumps({"call_id": f"g-{n % 50}", "transcript": f"Caller turn mk{n}, please."})
                await connection.post("/webhook/transcript", body.encode(), {"Content-Type": "application/json"})
            connection.close()

        asyncio.run(turns(200))
        before = cpu_seconds(pids)
        asyncio.run(turns(ROUNDS))
        return 1000 * (cpu_seconds(pids) - before) / ROUNDS
    finally:
        server.stop()


if __name__ == "__main__":
    main()

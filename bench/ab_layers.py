"""A/B of two checkouts in one run: CPU ms per turn of the conversation core (take_turn on Redis) and of Flask.

    .venv/bin/python bench/ab_layers.py /path/to/before /path/to/after [rounds]

Each round measures each checkout in a fresh process (its own code first on sys.path), alternating which
goes first, against one fake model and one Redis: the machine drifts, so only the figures of one run are
compared. The layers are bench/breakdown.py's, over its ROUNDS turns each.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Run in each checkout's own process: its take_turn, then its WSGI app, as bench/breakdown.py times them.
MEASURE = r'''
import json, logging, sys
tree, llm_url, redis_url = sys.argv[1:4]
sys.path[:0] = [tree, tree + "/bench"]
import breakdown
from voicebot import create_app
from voicebot.runtime import runtime_of
from werkzeug.test import EnvironBuilder

app = create_app({"REDIS_URL": redis_url, "REDIS_PREFIX": "ab", "ANTHROPIC_API_KEY": "test-key",
                  "ANTHROPIC_BASE_URL": llm_url, "LOG_LEVEL": "INFO"})
logging.getLogger("voicebot").handlers[0].stream = open("/dev/null", "w")
conversation = runtime_of(app).conversations["article"]
bodies = [json.dumps({"call_id": f"wsgi-{n % 50}", "transcript": f"Caller turn mk{n}, please."})
          for n in range(breakdown.ROUNDS + 200)]


def environ(n):
    return EnvironBuilder(method="POST", path="/webhook/transcript", data=bodies[n],
                          content_type="application/json", environ_base={"REMOTE_ADDR": "127.0.0.1"}).get_environ()


def wsgi(n):
    b"".join(app.wsgi_app(environ(n), lambda status, headers, exc_info=None: None))


core = breakdown.cpu_ms(lambda n: conversation.take_turn(f"core-{n % 50}", f"Caller turn mk{n}, please."))
print(json.dumps({"core": core, "flask": breakdown.cpu_ms(wsgi) - breakdown.cpu_ms(environ)}))
'''


def main() -> None:
    from voicebot_testing.processes import RedisServer, free_port, wait_for

    trees = {"before": sys.argv[1], "after": sys.argv[2]}
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    port = free_port()
    fake = subprocess.Popen([sys.executable, "-m", "voicebot.cli", "fake-llm", "--port", str(port)],
                            stdout=subprocess.DEVNULL)
    redis = RedisServer().start()
    figures: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    try:
        wait_for(lambda: socket.create_connection(("127.0.0.1", port)).close() or True, what="fake LLM")
        for round_ in range(rounds):
            order = list(trees.items()) if round_ % 2 == 0 else list(reversed(trees.items()))
            for name, tree in order:
                out = subprocess.run([sys.executable, "-c", MEASURE, tree, f"http://127.0.0.1:{port}", redis.url],
                                     capture_output=True, text=True, env={**os.environ, "PYTHONPATH": tree})
                if out.returncode:
                    raise SystemExit(f"{name}: {out.stderr.strip().splitlines()[-1]}")
                figures[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
    finally:
        fake.terminate()
        redis.stop()
    print("| checkout | core ms per turn (median, mean) | + Flask ms per turn (median, mean) | rounds |")
    print("|---|---|---|---|")
    for name, rows in figures.items():
        core = [r["core"] for r in rows]
        flask = [r["flask"] for r in rows]
        print(f"| {name} | {statistics.median(core):.3f}, {statistics.mean(core):.3f} | "
              f"{statistics.median(flask):.3f}, {statistics.mean(flask):.3f} | {len(rows)} |")


if __name__ == "__main__":
    main()

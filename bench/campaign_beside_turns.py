"""The article's turns with and without a 20,000-contact campaign running on the same instance.

    .venv/bin/python bench/campaign_beside_turns.py [--rounds 3] [--calls 200]

The Procfile's server (2 workers, a private redis-server), the compiled fake
model (0.7 s) and load (``loadgen drive``: calls of 6 turns, 2 s think), and
``voicebot fake-voipbin`` placing the campaign's calls and sending their
events back as VoIPBin does. Each round drives the same calls twice, alone
and beside a campaign of 20,000 contacts dialling at pace 5 (concurrency 20)
that started 5 s before, cancelled after; rounds alternate so that the
machine's drift hits both alike. Prints the turns' latency beyond the model
(p50, p99, max) for each, and the server's CPU.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.campaign import cpu_seconds, process_tree, wait_until_settled  # noqa: E402
from bench.knee import build  # noqa: E402
from voicebot_testing.processes import Gunicorn, RedisServer, free_port, procfile_command, wait_for  # noqa: E402

TOKEN = "bench-outbound-token"
CONTACTS = 20_000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="voicebot-beside-"))
    loadgen = build(tmp)
    redis = RedisServer().start()
    model_port, voipbin_port = free_port(), free_port()
    model = subprocess.Popen([str(loadgen), "model", "-port", str(model_port), "-latency", "0.7"])
    server = Gunicorn({"REDIS_URL": redis.url, "ANTHROPIC_API_KEY": "test-key",
                       "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{model_port}", "WEB_CONCURRENCY": "2",
                       "VOIPBIN_ACCESS_KEY": "test-access-key",
                       "VOIPBIN_API_URL": f"http://127.0.0.1:{voipbin_port}/v1.0",
                       "VOIPBIN_WEBHOOK_SECRET": "test-webhook-secret-0123456789ab",
                       "VOIPBIN_FETCH_TOKEN": "bench-fetch-token", "OUTBOUND_NUMBER": "+15559870000",
                       "OUTBOUND_TOKEN": TOKEN, "DIAL_ALLOWED": "*", "LOG_LEVEL": "WARNING"},
                      command=procfile_command())
    server.env["PUBLIC_URL"] = server.url
    voipbin = subprocess.Popen([sys.executable, "-m", "voicebot.cli", "fake-voipbin", "--port", str(voipbin_port),
                                "--webhook", server.url + "/webhook/voipbin"], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for port in (model_port, voipbin_port):
            wait_for(lambda: socket.create_connection(("127.0.0.1", port), timeout=0.2).close() or True,
                     what=f"port {port}")
        server.start(tmp / "gunicorn.log")
        assert server.process is not None
        wait_for(lambda: len(process_tree(server.process.pid)) == 3, what="two workers")
        pids = process_tree(server.process.pid)
        wait_until_settled(pids)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        rows = []
        for n in range(args.rounds):
            for beside in ((False, True) if n % 2 == 0 else (True, False)):
                campaign_id = None
                if beside:
                    answer = requests.post(server.url + "/campaigns", headers=auth, timeout=120, json={
                        "contacts": [{"phone": f"+1555{i:07d}"} for i in range(CONTACTS)],
                        "concurrency": 20, "pace": 5})
                    answer.raise_for_status()
                    campaign_id = answer.json()["campaign_id"]
                    time.sleep(5.0)  # the campaign under way before the load: its dials and its calls' events
                before = cpu_seconds(pids)
                out = subprocess.run([str(loadgen), "drive", "-url", server.url, "-calls", str(args.calls),
                                      "-turns", "6", "-think", "2", "-ramp", "5", "-model-latency", "0.7",
                                      "-run", f"r{n}{'b' if beside else 'a'}"],
                                     capture_output=True, text=True, check=True)
                cpu = cpu_seconds(pids) - before
                result = json.loads(out.stdout)
                dialled = None
                if campaign_id:
                    status = requests.get(f"{server.url}/campaigns/{campaign_id}", headers=auth, timeout=30).json()
                    dialled = status["contacts"] - status["pending"]
                    requests.post(f"{server.url}/campaigns/{campaign_id}/cancel", headers=auth, timeout=60)
                    wait_for(lambda: requests.get(f"{server.url}/campaigns/{campaign_id}", headers=auth,
                                                  timeout=30).json()["live"] == 0, timeout=120, what="its calls' end")
                rows.append((n, beside, result, cpu, dialled))
                print(f"round {n} {'beside a 20,000-contact campaign' if beside else 'alone':<34} "
                      f"ok {result['ok']}/{result['turns']} errors {result['errors']} crossed {result['crossed']} "
                      f"beyond the model p50 {result['beyond_p50_ms']:.1f} p99 {result['beyond_p99_ms']:.1f} "
                      f"max {result['max_ms'] - 700:.1f} ms; server CPU {cpu:.1f} s"
                      + (f"; {dialled} contacts dialled meanwhile" if dialled is not None else ""), flush=True)
        for beside in (False, True):
            p99s = sorted(r[2]["beyond_p99_ms"] for r in rows if r[1] == beside)
            print(f"{'beside' if beside else 'alone'}: p99 beyond the model {', '.join(f'{p:.1f}' for p in p99s)} ms")
    finally:
        voipbin.terminate()
        server.stop()
        model.terminate()
        redis.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

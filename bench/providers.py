"""CPU per turn of the worker, Anthropic's adapter against the OpenAI-compatible one, A/B in one run.

Each provider's fake runs in a process of its own (``voicebot fake-llm``, ``voicebot fake-openai``), and so does
the load (this process); the figure is the one gunicorn worker's own CPU (utime + stime from /proc) over the
turns it served, on the Procfile's command with one worker and the memory store. Rounds alternate between the
providers, so a drift of the machine touches both alike.

    .venv/bin/python bench/providers.py --rounds 3 --calls 40 --turns 8
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from voicebot_testing.processes import Gunicorn, free_port, procfile_command, wait_for  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def start_fake(command: str, port: int, *more: str) -> subprocess.Popen[bytes]:
    fake = subprocess.Popen([str(ROOT / ".venv/bin/voicebot"), command, "--port", str(port), *more],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: _listening(port), timeout=20, what=f"{command} on {port}")
    return fake


def _listening(port: int) -> bool:
    try:
        requests.get(f"http://127.0.0.1:{port}/", timeout=1)
    except requests.ConnectionError:
        return False
    return True


def one_round(env: dict[str, str], calls: int, turns: int, log: Path) -> float:
    """CPU seconds per turn of the worker, over ``calls`` x ``turns`` article turns."""
    server = Gunicorn({"REDIS_URL": "", "WEB_CONCURRENCY": "1", "WEB_THREADS": "32", "LOG_LEVEL": "WARNING", **env},
                      command=procfile_command()).start(log)
    try:
        (worker,) = server.workers()

        def call(n: int) -> None:
            with requests.Session() as http:
                for t in range(turns):
                    answer = http.post(f"{server.url}/webhook/transcript",
                                       json={"call_id": f"b{n}", "transcript": f"turn {t} mk{n}x{t}"}, timeout=15)
                    assert answer.status_code == 200, answer.text

        call(-1)  # warm: the first connection, the first model call
        before = cpu_seconds(worker)
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(call, range(calls)))
        return (cpu_seconds(worker) - before) / (calls * turns)
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--turns", type=int, default=8)
    args = parser.parse_args()
    anthropic_port, openai_port = free_port(), free_port()
    fakes = [start_fake("fake-llm", anthropic_port), start_fake("fake-openai", openai_port)]
    envs = {
        "anthropic": {"ANTHROPIC_API_KEY": "test-key", "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{anthropic_port}"},
        "openai": {"LLM_PROVIDER": "openai", "OPENAI_API_KEY": "test-openai-key", "LLM_MODEL": "test-model",
                   "OPENAI_BASE_URL": f"http://127.0.0.1:{openai_port}/v1"},
    }
    per_turn: dict[str, list[float]] = {name: [] for name in envs}
    try:
        with tempfile.TemporaryDirectory() as scratch:
            for n in range(args.rounds):
                for name, env in envs.items():
                    seconds = one_round(env, args.calls, args.turns, Path(scratch) / f"{name}-{n}.log")
                    per_turn[name].append(seconds)
                    print(f"round {n + 1} {name}: {seconds * 1000:.2f} ms CPU per turn", flush=True)
    finally:
        for fake in fakes:
            fake.terminate()
            fake.wait(10)
    a, o = (statistics.median(per_turn[name]) for name in ("anthropic", "openai"))
    print(f"median CPU per turn: anthropic {a * 1000:.2f} ms, openai {o * 1000:.2f} ms ({o / a:.2f}x), "
          f"{args.rounds} rounds of {args.calls} calls x {args.turns} turns, one worker, {time.strftime('%Y-%m-%d')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

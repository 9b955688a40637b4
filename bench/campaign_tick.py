"""What one worker's campaign tick costs, by the campaign's size: 20 contacts against 20,000, on Redis.

    .venv/bin/python bench/campaign_tick.py [--against <git ref>] [--ticks N]

Each size is measured in three states: outside its calling window (nothing
is due), paused, and running (every tick dials what the pace allows, on a
dialler that answers at once, and each call ends at once, busy, to be tried
again at once: up to 10 attempts, so the small campaign dials every tick too).
The figures are the worker's CPU per tick (``time.process_time``) and the
CPU Redis spends for it (INFO's used_cpu_user + used_cpu_sys), with a
private redis-server. ``--against`` measures that commit's code too, in the
same run (A/B, this machine drifts), from a git worktree.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIZES = (20, 20_000)
STATES = ("outside-window", "paused", "running")


def measure(ticks: int) -> dict[str, dict[str, float]]:
    """In this process, with whatever ``voicebot`` is first on sys.path: {"<size> <state>": figures}."""
    import redis

    from voicebot.outbound import campaign as steps
    from voicebot.outbound.book import RedisBook
    from voicebot.outbound.runner import CampaignRunner, outcome_listener
    from voicebot_testing.processes import RedisServer

    class AtOnce:
        platform = "voipbin"

        def __init__(self) -> None:
            self.placed: list[tuple[str, str]] = []

        def place_call(self, to: str, variables: dict[str, str], *, campaign_id: str | None = None,
                       leave_voicemail: bool = True) -> str:
            call_id = f"call-{len(self.placed)}"
            self.placed.append((call_id, campaign_id or ""))
            return call_id

    server = RedisServer().start()
    figures: dict[str, dict[str, float]] = {}
    try:
        client = redis.Redis.from_url(server.url)
        for size in SIZES:
            for state in STATES:
                client.flushall()
                book = RedisBook(redis.Redis.from_url(server.url), "bench", 3600)
                # Every call ends busy, to be tried again at once: the small campaign too has dials every tick.
                rules = steps.Rules(concurrency=20, pace=20.0, attempts=10, retry_gap=0.0,
                                    window=("00:00", "00:01") if state == "outside-window" else None)
                contacts = [(f"+1555{i:07d}", {"name": f"c{i}"}) for i in range(size)]
                campaign = steps.new_campaign("voipbin", rules, contacts)
                book.create(campaign)
                campaign_id = campaign["id"]
                if state == "paused":
                    book.update(campaign_id, lambda c: steps.set_state(c, "pause"))
                dialler = AtOnce()
                now = [time.time()]
                runner = CampaignRunner(book, {"voipbin": dialler}, clock=lambda: now[0])
                ended = outcome_listener(book, clock=lambda: now[0])
                if state == "outside-window":  # a moment that is outside 00:00-00:01 UTC
                    now[0] = now[0] - now[0] % 86400 + 43200
                redis_before = _redis_cpu(client)
                cpu_before, wall_before = time.process_time(), time.perf_counter()
                dials = 0
                for _ in range(ticks):
                    now[0] += 0.25
                    dials += runner.run_once()
                    for call_id, cmp in dialler.placed[-4:]:
                        ended({"campaign_id": cmp, "call_id": call_id, "outcome": "busy", "id": "rec"})
                cpu = time.process_time() - cpu_before
                wall = time.perf_counter() - wall_before
                redis_cpu = _redis_cpu(client) - redis_before
                figures[f"{size} {state}"] = {"worker_cpu_ms": cpu / ticks * 1000,
                                              "redis_cpu_ms": redis_cpu / ticks * 1000,
                                              "wall_ms": wall / ticks * 1000, "dials": dials}
                book.close()
        client.close()
    finally:
        server.stop()
    return figures


def _redis_cpu(client) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def run_in(tree: Path, ticks: int) -> dict[str, dict[str, float]]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "campaign_tick.py"), "--measure", "--ticks", str(ticks)],
                         cwd=tree, env=env, capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise SystemExit(f"campaign_tick: the measurement in {tree} failed: {out.stderr.strip().splitlines()[-1:]}")
    result: dict[str, dict[str, float]] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", help="a git ref to measure too, in the same run")
    parser.add_argument("--ticks", type=int, default=40)
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        sys.path.insert(0, os.environ.get("PYTHONPATH", str(ROOT)))
        print(json.dumps(measure(args.ticks)))
        return 0
    trees = [("this tree", ROOT)]
    with tempfile.TemporaryDirectory() as scratch:
        if args.against:
            other = Path(scratch) / "against"
            made = subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(other), args.against],
                                  capture_output=True, text=True)
            if made.returncode != 0:
                print(f"campaign_tick: cannot check out {args.against}: {made.stderr.strip()}", file=sys.stderr)
                return 2
            trees.insert(0, (args.against, other))
        try:
            results = [(name, run_in(tree, args.ticks)) for name, tree in trees]
        finally:
            if args.against:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                                str(Path(scratch) / "against")], capture_output=True)
    print(f"per worker tick, {args.ticks} ticks each (pace 20/s: 5 dials a tick when running, concurrency 20); "
          "worker CPU / Redis CPU / wall, ms")
    print(f"{'campaign':<24}" + "".join(f"{name:>30}" for name, _ in results))
    for key in results[0][1]:
        cells = "".join(f"{r[key]['worker_cpu_ms']:>9.2f} /{r[key]['redis_cpu_ms']:>7.2f} /{r[key]['wall_ms']:>8.2f}"
                        for _, r in results)
        dials = " ".join(f"{int(r[key]['dials'])}" for _, r in results)
        print(f"{key:<24}{cells}   dials {dials}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

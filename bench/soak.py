"""A soak: a steady load for a long while, and each worker's memory and open descriptors over it.

    .venv/bin/python bench/soak.py [--minutes 30] [--calls 150] [--every 60]

The Procfile's server (2 workers, a private redis-server) against the
compiled fake model (0.7 s), driven by ``loadgen drive`` (compiled: it takes
little of the cores it shares). The load is kept steady by four drivers
started a quarter of a round apart, each running rounds of calls (6 turns,
2 s think) back to back, so about ``--calls`` calls are up at any moment.
Every ``--every`` seconds it prints each worker's RSS and open descriptors;
at the end, the growth from the first minute's sample to the last, and the
turns, errors and crossed histories of every round. A leak shows as a
steady climb (pipecat-ai/pipecat#3750: about 1 MB a minute per session).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.campaign import process_tree, rss_mib  # noqa: E402
from bench.knee import Bench  # noqa: E402

DRIVERS = 4
TURNS, THINK, MODEL = 6, 2.0, 0.7


def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--calls", type=int, default=150, help="calls up at any moment, about")
    parser.add_argument("--every", type=float, default=60.0, help="seconds between samples")
    args = parser.parse_args()
    bench = Bench(["voicebot"])
    rounds: list[dict] = []
    failures: list[str] = []
    lock = threading.Lock()
    try:
        bench.with_model(MODEL)
        server = bench.servers["voicebot"]
        workers = process_tree(server.pid)[1:]
        round_seconds = TURNS * (THINK + MODEL)
        ends = time.monotonic() + args.minutes * 60

        def driver(n: int) -> None:
            time.sleep(n * round_seconds / DRIVERS)
            done = 0
            while time.monotonic() + round_seconds < ends:
                done += 1
                out = subprocess.run([str(bench.loadgen), "drive", "-url", server.url, "-calls",
                                      str(args.calls // DRIVERS), "-turns", str(TURNS), "-think", str(THINK),
                                      "-ramp", str(THINK), "-model-latency", str(MODEL),
                                      "-run", f"d{n}r{done}"],  # letters and digits: the reply's markers
                                     capture_output=True, text=True)
                with lock:
                    if out.returncode != 0:
                        failures.append(out.stderr.strip()[-200:])
                    else:
                        rounds.append(json.loads(out.stdout))

        threads = [threading.Thread(target=driver, args=(n,), daemon=True) for n in range(DRIVERS)]
        for thread in threads:
            thread.start()
        started = time.monotonic()
        samples: list[tuple[float, list[float], list[int]]] = []
        print(f"soak: {args.calls} calls up, {TURNS} turns, {THINK:g} s think, model {MODEL:g} s, "
              f"{args.minutes:g} min; workers {workers}", flush=True)
        while time.monotonic() < ends:
            time.sleep(min(args.every, max(0.0, ends - time.monotonic())))
            at = time.monotonic() - started
            rss = [rss_mib(pid) for pid in workers]
            fds = [descriptors(pid) for pid in workers]
            samples.append((at, rss, fds))
            with lock:
                turns = sum(r.get("ok", 0) for r in rounds)
            print(f"{at:7.0f} s  RSS MiB {' '.join(f'{r:7.1f}' for r in rss)}  descriptors "
                  f"{' '.join(f'{f:4d}' for f in fds)}  turns so far {turns}", flush=True)
        for thread in threads:
            thread.join()
    finally:
        bench.stop()
    first = next((s for s in samples if s[0] >= 60), samples[0])
    last = samples[-1]
    turns = sum(r.get("ok", 0) for r in rounds)
    errors = sum(r.get("errors", 0) for r in rounds)
    crossed = sum(r.get("crossed", 0) for r in rounds)
    print(f"from {first[0]:.0f} s to {last[0]:.0f} s: RSS " + ", ".join(
        f"{a:.1f} -> {b:.1f} MiB ({(b - a) / a * 100:+.1f}%)" for a, b in zip(first[1], last[1]))
        + "; descriptors " + ", ".join(f"{a} -> {b} ({b - a:+d})" for a, b in zip(first[2], last[2])))
    print(f"{len(rounds)} rounds, {turns} turns, {errors} errors, {crossed} crossed histories, "
          f"{len(failures)} drivers failed")
    return 0 if not failures and not errors and not crossed else 1


if __name__ == "__main__":
    sys.exit(main())

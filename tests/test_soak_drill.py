"""A short soak in the suite: rounds of calls back to back on two workers and Redis, each worker's memory
and open descriptors read after the first round and at the end. bench/soak.py runs the long one (30 minutes
and more) and docs/benchmarks.md has its figures; this one, bounded in time, catches a leak fast enough to
show in under a minute (a socket or a connection per call, a history kept per call in a process)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from .support import wait_for
from .test_scale_out import Campaign

SECONDS = 30.0
WARM_UP = 10.0  # both workers' pools, caches and thread stacks at their size under this load


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_a_steady_load_leaves_each_workers_memory_and_descriptors_flat(fake_llm, gunicorns, redis_url, redis_prefix):
    fake_llm.latency = 0.05
    server = gunicorns({"REDIS_URL": redis_url, "REDIS_PREFIX": redis_prefix, "ANTHROPIC_API_KEY": fake_llm.api_key,
                        "ANTHROPIC_BASE_URL": fake_llm.url, "WEB_CONCURRENCY": "2", "WEB_THREADS": "32",
                        "LOG_LEVEL": "WARNING"})
    wait_for(lambda: len(server.workers()) == 2, what="two workers")
    workers = server.workers()
    rounds, answered, wrong, lost = 0, 0, [], []
    first: tuple[list[int], list[int]] | None = None
    started = time.monotonic()
    ends = started + SECONDS
    while time.monotonic() < ends:
        campaign = Campaign(server.url, calls=30, turns=6).run()
        rounds += 1
        answered += campaign.answered
        wrong += campaign.wrong
        lost += campaign.lost
        if first is None and time.monotonic() - started >= WARM_UP:
            first = ([rss_kib(pid) for pid in workers], [descriptors(pid) for pid in workers])
    last = ([rss_kib(pid) for pid in workers], [descriptors(pid) for pid in workers])
    assert first is not None
    growth = [(b - a) / a for a, b in zip(first[0], last[0])]
    print(f"\nDRILL soak: {rounds} rounds of 30 calls x 6 turns in {SECONDS:.0f} s, {answered} turns answered; "
          f"worker RSS {first[0]} -> {last[0]} KiB ({', '.join(f'{g * 100:+.1f}%' for g in growth)}), "
          f"descriptors {first[1]} -> {last[1]}")
    assert wrong == [] and lost == [], (wrong[:3], lost[:3])
    assert answered == rounds * 30 * 6 and rounds >= 6
    assert server.workers() == workers  # no worker died and was replaced meanwhile
    assert all(g < 0.10 for g in growth), growth  # a call's worth of memory kept per call would be far more
    assert all(b - a <= 8 for a, b in zip(first[1], last[1])), (first[1], last[1])

"""Prometheus metrics, served at GET /metrics.

Under gunicorn each worker is a process of its own, so prometheus_client runs
in its multi-process mode: every process writes its values to files in
PROMETHEUS_MULTIPROC_DIR (set up by voicebot/gunicorn_config.py before any
worker starts) and a scrape adds them up. Without that variable (``flask
run``, the tests) the ordinary in-process registry is used.
"""

from __future__ import annotations

import os
from typing import Callable, Iterable, Iterator

from prometheus_client import (CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram,
                               generate_latest, multiprocess)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

# Seconds: a turn's budget is a few seconds; the low end shows our own overhead.
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0)

TURNS = Counter("voicebot_turns", "Caller turns handled, by outcome (reply, fallback, duplicate)",
                ["outcome"])
TURN_SECONDS = Histogram("voicebot_turn_seconds", "Time to handle a caller turn: lock wait, model, store, speech",
                         buckets=_BUCKETS)
LLM_SECONDS = Histogram("voicebot_llm_seconds", "Time waiting for the model in a turn", buckets=_BUCKETS)
LOCK_WAIT_SECONDS = Histogram("voicebot_lock_wait_seconds",
                              "Time a turn waited for its call's lock (another turn of the same call)",
                              buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0))
GREETING_SECONDS = Histogram("voicebot_time_to_greeting_seconds",
                             "From the event that opens a call to its greeting: said into the call (VoIPBin), "
                             "or answered in the response that greets (Twilio, the article's contract)",
                             ["platform"], buckets=_BUCKETS)
FALLBACKS = Counter("voicebot_fallbacks", "Turns answered with FALLBACK_REPLY, by cause", ["cause"])
CALLS = Counter("voicebot_calls", "Calls started and ended (and placed: outbound)", ["event"])
OUTBOUND = Counter("voicebot_outbound_calls", "Outbound calls ended, by outcome: human, voicemail, busy, "
                   "no_answer, failed, cancelled", ["outcome"])
ERRORS = Counter("voicebot_errors", "Requests answered with an error, by kind", ["kind"])
LLM_TOKENS = Counter("voicebot_llm_tokens", "Model tokens billed, by kind: input, cache_write, cache_read, output",
                     ["kind"])
RECORDS = Counter("voicebot_call_records",
                  "End-of-call records, by event: made, delivered, retried, failed, dropped (memory queue full)",
                  ["event"])


class _ReadAtScrape:
    """A gauge read when /metrics is scraped (with Redis: across all instances)."""

    def __init__(self, name: str, documentation: str, read: Callable[[], float | None]) -> None:
        self.name, self.documentation, self.read = name, documentation, read

    def collect(self) -> Iterator[Metric]:
        try:
            value = self.read()
        except Exception:  # a scrape must not fail because the store is down
            return
        yield GaugeMetricFamily(self.name, self.documentation, value=value or 0.0)


# A gauge read at each scrape, registered by a package: (name, documentation, how to read it).
Gauge = tuple[str, str, Callable[[], float | None]]


def render(gauges: Iterable[Gauge] = ()) -> tuple[bytes, str]:
    """The exposition text of all metrics, with ``gauges`` read now (the factory registers the store's active
    calls and the outbox's oldest record; packages add theirs), and its content type."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = CollectorRegistry()
        registry.register(_Forward(REGISTRY))
    for name, documentation, read in gauges:
        registry.register(_ReadAtScrape(name, documentation, read))
    return generate_latest(registry), CONTENT_TYPE_LATEST


class _Forward:
    """The process's default registry, as one collector of a per-scrape registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterable[Metric]:
        return self.registry.collect()

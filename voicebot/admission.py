"""Shedding load at once instead of queueing it: a bound on webhooks in flight per worker.

gunicorn's threaded worker hands each request to a thread; with every thread
busy, new requests wait in its queue for as long as it takes, and a caller
hears a dead line for seconds. Past the bound, a webhook is answered 503 with
Retry-After at once (VoIPBin sends the event again a second later; the
article's platform can do the same), and the threads kept back answer those
quickly.
"""

from __future__ import annotations

import threading

# Threads of a worker kept for answering sheds and health checks, when it has
# plenty: a worker with a few threads (a laptop, a CPU-bound benchmark) serves
# short requests that queue harmlessly, and shedding them would only cost throughput.
RESERVED_THREADS = 4
PLENTY_OF_THREADS = 32


def in_flight_limit(threads: int) -> int:
    return threads - RESERVED_THREADS if threads >= PLENTY_OF_THREADS else threads


class Admission:
    """Webhooks in flight in this worker, up to ``limit``: ``enter`` says no at once past it."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self._lock = threading.Lock()
        self.in_flight = 0

    def enter(self) -> bool:
        with self._lock:
            if self.in_flight >= self.limit:
                return False
            self.in_flight += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

"""Each request's deadline: when it passes, or when the request is cancelled, the request is given up.

A socket's timeout bounds each read, not the request: a server that trickles
its answer a byte at a time inside the timeout would hold a turn for as long as
it liked. libcurl keeps the whole transfer to ``CURLOPT_TIMEOUT_MS`` (its name
lookup, connecting, sending and every read), and the client's transfer loop
checks the cutoff between its waits, so a request cancelled from another
thread (a tool call the turn gave up on) ends too.
"""

from __future__ import annotations

import threading
import time

# How often a transfer that can be cancelled from another thread looks at its cutoff while it waits.
CANCEL_POLL_SECONDS = 0.1


class Cutoff:
    """One request's deadline (``at``, on time.monotonic), which another thread may bring forward (``cancel``).

    ``cancellable`` cutoffs (made with ``HTTP.cutoff`` and handed to a request)
    are looked at every CANCEL_POLL_SECONDS while the request waits; the
    thread's own deadline needs no polling: the transfer waits until it.
    """

    __slots__ = ("at", "cancelled", "finished", "cancellable", "_lock")

    def __init__(self, at: float, *, cancellable: bool = False) -> None:
        self.at = at
        self.cancelled = False
        self.finished = False
        self.cancellable = cancellable
        self._lock = threading.Lock()

    @property
    def expired(self) -> bool:
        return self.cancelled or time.monotonic() >= self.at

    def left(self) -> float:
        return 0.0 if self.cancelled else max(0.0, self.at - time.monotonic())

    def wait_slice(self) -> float:
        """How long the transfer may wait before looking at this cutoff again."""
        left = self.left()
        return min(left, CANCEL_POLL_SECONDS) if self.cancellable else left

    def cancel(self) -> None:
        """Give the request up now: it is not sent if it has not been, and a wait in progress ends soon."""
        with self._lock:
            if not self.finished:
                self.cancelled = True

    def finish(self) -> None:
        """The request is over: a late ``cancel`` does nothing."""
        with self._lock:
            self.finished = True

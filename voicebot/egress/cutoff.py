"""Each request's deadline, held on its sockets: at the deadline (or on ``cancel``) they are shut down, and a
read blocked in them returns at once.

A socket's timeout bounds each read, not the request: a server that trickles
its answer a byte at a time inside the timeout holds a turn for as long as it
likes, and a library's buffered reads loop over many socket reads. So one
thread per client watches the deadlines of the requests in flight and cuts
off the ones still running when theirs passes. It sleeps until the earliest
deadline; a request that ends before then costs a push onto a heap and no
wake-up (deadlines arrive in roughly increasing order, so the thread is
rarely woken early), and the request runs in its caller's own thread.
"""

from __future__ import annotations

import heapq
import itertools
import socket
import threading
import time
from typing import Any, Protocol

# Who holds a connection changes as it passes from one request to the next (urllib3 puts it back in its pool
# the moment the body ends): taking it and cutting it off are one at a time, so a request cut off late never
# shuts a socket that another request has taken meanwhile.
_OWNERS = threading.Lock()


class Connection(Protocol):
    sock: Any
    held_by: "Cutoff | None"


# A heap this long is mostly requests that finished long before their deadline: it is rebuilt without them.
_COMPACT_AT = 4096


class Cutoff:
    """One request's deadline (``at``, on time.monotonic) and the sockets it uses, so that it can be cut off
    from another thread: by the watchdog at the deadline, or by ``cancel`` (a tool call the turn gave up on)."""

    __slots__ = ("at", "cancelled", "finished", "_connections")

    def __init__(self, at: float) -> None:
        self.at = at
        self.cancelled = False
        self.finished = False
        self._connections: list[Connection] = []

    @property
    def expired(self) -> bool:
        return self.cancelled or time.monotonic() >= self.at

    def left(self) -> float:
        return 0.0 if self.cancelled else max(0.0, self.at - time.monotonic())

    def hold(self, connection: Connection) -> None:
        """``connection`` is this request's from now on (shut at once if the request is already cut off)."""
        with _OWNERS:
            connection.held_by = self
            if connection not in self._connections:
                self._connections.append(connection)
            if self.cancelled and connection.sock is not None:
                _shut(connection.sock)

    def cancel(self) -> None:
        """Cut the request off now: it is not sent if it has not been, and a read in progress returns."""
        with _OWNERS:
            if self.finished:
                return
            self.cancelled = True
            for connection in self._connections:
                if connection.held_by is self and connection.sock is not None:
                    _shut(connection.sock)

    def finish(self) -> None:
        """The request is over: its connections (kept alive for others) are no longer this request's to cut."""
        with _OWNERS:
            self.finished = True
            for connection in self._connections:
                if connection.held_by is self:
                    connection.held_by = None
            self._connections.clear()


def _shut(sock: socket.socket) -> None:
    try:
        # The plain socket's shutdown, also for a TLS socket: it wakes a read blocked in another thread.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


class Watchdog:
    """Cuts off each request still running at its deadline. Started on first use, in the worker process."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Cutoff]] = []
        self._order = itertools.count()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False

    def watch(self, cutoff: Cutoff) -> None:
        with self._wake:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="egress-deadlines", daemon=True)
                self._thread.start()
            earliest = self._heap[0][0] if self._heap else None
            heapq.heappush(self._heap, (cutoff.at, next(self._order), cutoff))
            if len(self._heap) > _COMPACT_AT:
                self._heap = [entry for entry in self._heap if not entry[2].finished]
                heapq.heapify(self._heap)
            if earliest is None or cutoff.at < earliest:
                self._wake.notify()  # the thread sleeps until a later deadline: wake it for this one

    def _run(self) -> None:
        with self._wake:
            while not self._stopping:
                now = time.monotonic()
                while self._heap and (self._heap[0][2].finished or self._heap[0][0] <= now):
                    _, _, cutoff = heapq.heappop(self._heap)
                    if not cutoff.finished:
                        cutoff.cancel()
                self._wake.wait(self._heap[0][0] - now if self._heap else None)

    def stop(self) -> None:
        """Cut off every request in flight (a worker stopping)."""
        with self._wake:
            self._stopping = True
            pending = [entry[2] for entry in self._heap]
            self._heap.clear()
            self._wake.notify()
        for cutoff in pending:
            cutoff.cancel()

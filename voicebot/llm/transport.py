"""A wall-clock deadline on the model's HTTP calls, kept by the socket reads of the calling thread.

An HTTP client's timeout bounds each read, not the call: a model that
trickles its answer a few bytes at a time holds a turn for as long as it
likes. Running the call on another thread and waiting for it with a timeout
bounds it, but costs every turn a hand-off between threads (measured: ~0.7 ms
of CPU per turn in a loaded worker, a fifth of the whole). Instead, the
turn's thread sets its deadline here, and every read and write of the
connection waits at most the time left: the call runs in the turn's own
thread and still ends on time.

Opening a connection is the exception: the name lookup inside it takes no
timeout at all, so a new connection is opened on a helper thread and waited
for within the deadline. Connections are kept alive, so that is rare.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Executor, Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator

import httpcore2
import httpx2

_local = threading.local()

# A thread's connection waits this long for its next turn. Longer than
# httpx's 5 s: a worker's threads take turns in order, so a thread comes back
# only after all the others have had one, and a connection closed meanwhile
# by the server is seen (readable at EOF) and replaced before it is used.
KEEPALIVE_SECONDS = 60.0


@contextmanager
def wall_clock_deadline(seconds: float) -> Iterator[None]:
    """Every model connection's I/O in this thread ends within ``seconds`` from now."""
    previous = getattr(_local, "deadline", None)
    _local.deadline = time.monotonic() + seconds
    try:
        yield
    finally:
        _local.deadline = previous


def _left(timeout: float | None, expired: type[Exception]) -> float | None:
    deadline: float | None = getattr(_local, "deadline", None)
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise expired("the model call's deadline has passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore2.NetworkStream):
    def __init__(self, stream: httpcore2.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _left(timeout, httpcore2.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _left(timeout, httpcore2.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore2.NetworkStream:
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname,
                                                      _left(timeout, httpcore2.ConnectTimeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


def _close_unclaimed(opening: "Future[Any]") -> None:
    """A connection opened after its caller gave up is nobody's."""
    if opening.exception() is None:
        opening.result().close()


class DeadlineBackend(httpcore2.NetworkBackend):
    """httpcore's own socket backend, with every stream held to the thread's deadline."""

    def __init__(self, helpers: Callable[[], Executor]) -> None:
        self._sockets = httpcore2.SyncBackend()
        self._helpers = helpers

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore2.NetworkStream:
        if getattr(_local, "deadline", None) is None:  # outside a model call: nothing to wait for
            return _DeadlineStream(self._sockets.connect_tcp(host, port, timeout, local_address, socket_options))
        left = _left(timeout, httpcore2.ConnectTimeout)
        opening = self._helpers().submit(self._sockets.connect_tcp, host, port, left, local_address, socket_options)
        try:
            stream = opening.result(left)
        except FutureTimeout:
            opening.add_done_callback(_close_unclaimed)
            raise httpcore2.ConnectTimeout(f"no connection to {host} within the model call's deadline") from None
        return _DeadlineStream(stream)

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None) -> httpcore2.NetworkStream:
        return _DeadlineStream(self._sockets.connect_unix_socket(path, _left(timeout, httpcore2.ConnectTimeout),
                                                                 socket_options))

    def sleep(self, seconds: float) -> None:
        self._sockets.sleep(seconds)


class _PoolPerThread:
    """httpcore's request interface over one small pool per thread.

    httpcore's shared pool looks at every connection it holds, and asks the
    kernel whether each idle one has been closed, twice for every request:
    with a hundred turns in flight per worker that was ~10% of the worker's
    CPU (py-spy, bench/campaign.py). A thread makes one call at a time, so its
    own pool holds one connection, kept alive between its turns.
    """

    def __init__(self, make: Callable[[], httpcore2.ConnectionPool]) -> None:
        self._make = make
        self._local = threading.local()
        self._pools: list[httpcore2.ConnectionPool] = []
        self._lock = threading.Lock()

    def _own(self) -> httpcore2.ConnectionPool:
        pool = getattr(self._local, "pool", None)
        if pool is None:
            pool = self._local.pool = self._make()
            with self._lock:
                self._pools.append(pool)
        return pool

    def handle_request(self, request: httpcore2.Request) -> httpcore2.Response:
        return self._own().handle_request(request)

    def close(self) -> None:
        with self._lock:
            pools, self._pools = self._pools, []
        for pool in pools:
            pool.close()

    def __enter__(self) -> "_PoolPerThread":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DeadlineTransport(httpx2.HTTPTransport):
    """httpx's transport over connections that keep the calling thread's deadline, one pool per thread."""

    def __init__(self, helpers: Callable[[], Executor]) -> None:
        super().__init__()
        ssl_context = httpx2.create_ssl_context()  # one for every thread's pool: making one loads the CA bundle
        backend = DeadlineBackend(helpers)
        # httpx takes no network backend of its own: its pool is replaced by
        # ones built the same way (httpcore's public constructor) that take one.
        self._pool = _PoolPerThread(lambda: httpcore2.ConnectionPool(  # type: ignore[assignment]
            ssl_context=ssl_context, max_connections=4, max_keepalive_connections=1, keepalive_expiry=KEEPALIVE_SECONDS,
            network_backend=backend))


def proxy_configured() -> bool:
    """An HTTP(S) proxy from the environment, which only httpx's own transport honours."""
    from urllib.request import getproxies

    return any(scheme in getproxies() for scheme in ("http", "https", "all"))

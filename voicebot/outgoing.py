"""Requests voicebot makes to the operator's systems (tools, call records): bounded and never redirected.

Every such request:

- **never follows a redirect.** A 3xx is the answer, and the caller of
  ``post`` treats it as a failure: a signed body re-sent to wherever a
  ``Location`` points could reach a host nobody allowed.
- **has one total deadline** for the name lookup, connecting, sending, the
  headers and the body. A socket read timeout alone does not bound a peer that trickles a byte
  at a time, so a watchdog thread shuts the socket down when the deadline
  passes, and the blocked read returns at once.
- **is never sent late.** A request whose deadline passed before it went out
  (it waited for a connection, or was cancelled) is not sent at all: a booking
  or a refund must not happen minutes after the caller was told it failed.
- **reaches only allowed addresses**, where an ``AddressPolicy`` is given:
  the address checked is the one actually connected to, after the name was
  resolved, so a name that resolves (or is rebound) to loopback, a private
  network, a link-local or a cloud metadata address is refused whatever the
  URL's text says.

It is urllib3 (which requests is built on) with its connection classes
extended; no proxy from the environment is used.
"""

from __future__ import annotations

import heapq
import ipaddress
import itertools
import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, Mapping, cast
from urllib.parse import urlsplit

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import NameResolutionError, NewConnectionError

log = logging.getLogger(__name__)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class OutgoingFailure(Exception):
    """A request that got no usable answer; ``str()`` says why in words fit for a log line or the model."""


class Expired(OutgoingFailure):
    """The request's deadline passed (or it was cancelled) before its answer came whole."""


class AddressRefused(OutgoingFailure):
    """The host resolved only to addresses the policy refuses."""


@dataclass(frozen=True)
class AddressPolicy:
    """Which addresses a request may connect to: public ones, and what is allowed explicitly.

    Refused unless allowed: loopback (unless ``allow_loopback``), private
    networks, link-local (169.254.0.0/16, where cloud metadata services
    answer), shared (100.64.0.0/10), multicast, reserved and unspecified
    addresses, and IPv6's equivalents; an IPv4 address written as IPv6 is
    judged as IPv4.
    """

    allow_loopback: bool = False
    allowed_networks: tuple[Network, ...] = ()

    def problem(self, host: str) -> str | None:
        """None if ``host`` (an IP address) may be connected to; otherwise why not."""
        address = _address(host)
        if address is None:
            return f"{host} is not an IP address"
        if any(address in network for network in self.allowed_networks):
            return None
        if address.is_loopback:
            return None if self.allow_loopback else f"{address} is a loopback address"
        if address.is_global and not address.is_multicast:
            return None
        return f"{address} is not a public address"

    def url_problem(self, host: str) -> str | None:
        """The same judgement on a URL's host where it is an address or ``localhost`` (a name is judged
        when it is resolved, at each connection)."""
        if host == "localhost" or host.endswith(".localhost"):
            return None if self.allow_loopback else "localhost is a loopback address"
        return None if _address(host) is None else self.problem(host)


def _address(host: str) -> Address | None:
    """``host`` as an IP address (an IPv4 address written as IPv6 as IPv4), or None for a name."""
    try:
        address: Address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_loopback_host(host: str) -> bool:
    """``localhost``, or a loopback address."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    address = _address(host)
    return address is not None and address.is_loopback


@dataclass(frozen=True)
class Answer:
    """An answer to an outgoing request: its status and its body (None when it did not come whole in time)."""

    status: int
    # The body, at most the bytes asked for; None when it did not come whole in time.
    body: bytes | None

    @property
    def redirect(self) -> bool:
        return 300 <= self.status < 400

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


@dataclass(eq=False)
class Exchange:
    """One request's deadline and the sockets it uses, so that it can be cut off from another thread."""

    deadline: float  # time.monotonic()
    policy: AddressPolicy | None = None
    resolver: ThreadPoolExecutor | None = None  # where name lookups run, so that the deadline bounds them
    cancelled: bool = False
    finished: bool = False
    _sockets: list[socket.socket] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def expired(self) -> bool:
        return self.cancelled or time.monotonic() >= self.deadline

    def check(self) -> None:
        """Raise Expired unless there is time left: nothing is sent late."""
        if self.expired:
            raise Expired("no time was left to send it")

    def hold(self, sock: socket.socket | None) -> None:
        if sock is None:
            return
        with self._lock:
            if sock not in self._sockets:
                self._sockets.append(sock)
            cut = self.cancelled
        if cut:
            _shut(sock)

    def cancel(self) -> None:
        """Cut the request off now: it is not sent if it has not been, and a read in progress returns."""
        with self._lock:
            if self.finished:
                return
            self.cancelled = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)

    def finish(self) -> None:
        with self._lock:
            self.finished = True
            self._sockets.clear()


def _shut(sock: socket.socket) -> None:
    try:
        # The plain socket's shutdown, also for a TLS socket: it wakes a read blocked in another thread.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


_current = threading.local()


def _exchange() -> Exchange | None:
    return getattr(_current, "exchange", None)


class _GuardedConnection:
    """Mixed into urllib3's connections: the exchange's address policy at connect, its deadline at send."""

    host: str
    port: int
    timeout: Any
    socket_options: Any
    sock: Any
    _dns_host: str

    def _new_conn(self) -> socket.socket:
        exchange = _exchange()
        if exchange is None:  # not sent through OutgoingHTTP: nothing to guard
            return cast(socket.socket, super()._new_conn())  # type: ignore[misc]
        exchange.check()
        try:
            infos = _resolve(self._dns_host, self.port, exchange)
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc  # type: ignore[arg-type]
        refused: list[str] = []
        error: OSError | None = None
        for family, kind, proto, _, address in infos:
            problem = exchange.policy.problem(str(address[0])) if exchange.policy else None
            if problem:
                refused.append(problem)
                continue
            sock = socket.socket(family, kind, proto)
            exchange.hold(sock)
            try:
                for option in self.socket_options or ():
                    sock.setsockopt(*option)
                sock.settimeout(self.timeout if isinstance(self.timeout, (int, float)) else None)
                sock.connect(address)
                exchange.check()
                return sock
            except OSError as exc:
                sock.close()
                error = exc
        if error is None and refused:
            why = f"{self.host} resolves only to addresses not allowed: {refused[0]}"
            raise _Refused(self, why)  # type: ignore[arg-type]
        raise NewConnectionError(self, f"Failed to establish a new connection: {error}")  # type: ignore[arg-type]

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        exchange = _exchange()
        if exchange is not None:
            exchange.hold(self.sock)  # a TLS socket wraps the one held since _new_conn
            exchange.check()

    def request(self, *args: Any, **kwargs: Any) -> None:
        exchange = _exchange()
        if exchange is not None:
            exchange.check()  # waited too long for a connection: not sent at all
            exchange.hold(self.sock)  # a kept-alive connection, already open
        super().request(*args, **kwargs)  # type: ignore[misc]


class _Refused(NewConnectionError):
    pass


def _resolve(host: str, port: int, exchange: Exchange) -> list[Any]:
    """The host's addresses, looked up within the exchange's deadline.

    A lookup blocks in the C library, where no socket can be shut down: it
    runs on the OutgoingHTTP's resolver threads and is waited for only until
    the deadline (one still running then finishes on its own, and is unused).
    """
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    else:  # an address needs no lookup
        family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
        return socket.getaddrinfo(str(address), port, family, socket.SOCK_STREAM)
    if exchange.resolver is None:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    lookup = exchange.resolver.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    try:
        return lookup.result(timeout=max(0.0, exchange.deadline - time.monotonic()))
    except FutureTimeout:
        exchange.cancel()
        raise Expired(f"{host} could not be looked up in time") from None


class _HTTPConnection(_GuardedConnection, HTTPConnection):
    pass


class _HTTPSConnection(_GuardedConnection, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class _Watchdog(threading.Thread):
    """Cuts off each exchange that is still running at its deadline."""

    def __init__(self) -> None:
        super().__init__(name="outgoing-deadlines", daemon=True)
        self._heap: list[tuple[float, int, Exchange]] = []
        self._order = itertools.count()
        self._wake = threading.Condition()
        self.stopping = False

    def watch(self, exchange: Exchange) -> None:
        with self._wake:
            heapq.heappush(self._heap, (exchange.deadline, next(self._order), exchange))
            self._wake.notify()

    def run(self) -> None:
        with self._wake:
            while not self.stopping:
                now = time.monotonic()
                while self._heap and (self._heap[0][2].finished or self._heap[0][0] <= now):
                    _, _, exchange = heapq.heappop(self._heap)
                    if not exchange.finished:
                        exchange.cancel()
                wait = self._heap[0][0] - now if self._heap else None
                self._wake.wait(wait)

    def stop(self) -> None:
        with self._wake:
            self.stopping = True
            pending = [exchange for _, _, exchange in self._heap]
            self._heap.clear()
            self._wake.notify()
        for exchange in pending:
            exchange.cancel()


def operator_url_problem(url: object, policy: AddressPolicy) -> str:
    """What is wrong with a URL of the operator's (a tool, the caller context) before anything is sent; "" if
    nothing: https to an allowed address, http only to loopback with TOOLS_ALLOW_LOOPBACK."""
    if not isinstance(url, str):
        return "is missing"
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        return "is not a URL"
    if not host or parts.scheme not in ("http", "https"):
        return "must be an https:// URL"
    loopback = is_loopback_host(host)
    if parts.scheme == "http" and not loopback:
        return "must be https:// (http:// only to loopback, with TOOLS_ALLOW_LOOPBACK=1)"
    problem = policy.url_problem(host)
    if problem and loopback:
        return "is on loopback: set TOOLS_ALLOW_LOOPBACK=1 (local trials only)"
    if problem:
        return f"is not allowed: {problem} (name its network in TOOLS_ALLOW_NETWORKS to allow it)"
    return ""


class OutgoingHTTP:
    """POSTs to the operator's systems, each bounded by one deadline; see the module's docstring."""

    def __init__(self, *, policy: AddressPolicy | None = None, pool_size: int = 16) -> None:
        self.policy = policy
        self._manager = urllib3.PoolManager(num_pools=16, maxsize=pool_size, retries=False)
        self._manager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
        self._watchdog: _Watchdog | None = None
        self._watchdog_lock = threading.Lock()
        self._resolver = ThreadPoolExecutor(4, thread_name_prefix="outgoing-resolve")  # threads made on first use

    def exchange(self, timeout: float) -> Exchange:
        """A deadline ``timeout`` seconds from now, to pass to ``post`` (and to cancel from elsewhere)."""
        return Exchange(time.monotonic() + timeout, self.policy, resolver=self._resolver)

    def post(self, url: str, body: bytes, headers: Mapping[str, str], exchange: Exchange,
             read_at_most: int) -> Answer:
        """Send ``body``; the status and up to ``read_at_most`` bytes of the answer (decoded if compressed).

        Raises Expired, AddressRefused or OutgoingFailure when no status came.
        A body that does not come whole in time is ``None`` in the answer.
        """
        self._watch(exchange)
        _current.exchange = exchange
        try:
            return self._post(url, body, headers, exchange, read_at_most)
        finally:
            _current.exchange = None
            exchange.finish()

    def _post(self, url: str, body: bytes, headers: Mapping[str, str], exchange: Exchange,
              read_at_most: int) -> Answer:
        left = exchange.deadline - time.monotonic()
        if left <= 0 or exchange.cancelled:
            raise Expired("no time was left to send it")
        try:
            response = self._manager.request(
                "POST", url, body=body, headers=dict(headers), redirect=False, retries=False,
                preload_content=False, timeout=urllib3.Timeout(connect=min(2.0, left), read=left))
        except _Refused as exc:
            raise AddressRefused(str(exc)) from None
        except NameResolutionError:
            raise OutgoingFailure("its host name could not be resolved") from None
        except Exception as exc:  # urllib3's errors, and OSError from a socket cut off mid-way
            if exchange.expired:
                raise Expired("it did not answer in time") from None
            raise OutgoingFailure(f"it could not be reached ({type(exc).__name__})") from None
        data: bytes | None = b""
        try:
            if read_at_most > 0:
                data = response.read(read_at_most + 1, decode_content=True)
        except Exception:  # cut off at the deadline, a broken connection, a bad encoding
            data = None
        if exchange.cancelled:  # cut off: what came before the cut may look whole, and is not
            data = None
        if data is None or read_at_most <= 0 or len(data) > read_at_most:
            response.close()  # not whole, or not wanted: the connection is not kept
        response.release_conn()
        return Answer(response.status, data)

    def _watch(self, exchange: Exchange) -> None:
        with self._watchdog_lock:
            if self._watchdog is None:  # made on first use, in the worker process
                self._watchdog = _Watchdog()
                self._watchdog.start()
            watchdog = self._watchdog
        watchdog.watch(exchange)

    def close(self) -> None:
        """Cut off every request in flight (a worker stopping) and let go of the connections."""
        with self._watchdog_lock:
            watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            watchdog.stop()
        self._resolver.shutdown(wait=False, cancel_futures=True)
        self._manager.clear()

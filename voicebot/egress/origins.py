"""Where a request goes: one urllib3 connection pool per origin, pinned to an address looked up within the
request's deadline and judged by the client's address policy, or the proxy the environment names for it.

urllib3 looks a host name up inside ``connect``, with no timeout at all (the
C library's lookup cannot be interrupted), and at each new connection, so an
address checked once could be rebound before the next. Here the name is
looked up on a helper thread, waited for only within the deadline, checked,
and the pool connects to that address: the TLS handshake still names and
verifies the host (``server_hostname``), and the ``Host`` header carries it.
An origin's address is looked up again after ``DNS_SECONDS``.

The pools' connection classes hold each socket for the request using it
(``Cutoff.hold``), through the public ``connect`` and ``request`` of
urllib3's connections, so the request's deadline can shut it down.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any
from urllib.request import getproxies, proxy_bypass

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from .addresses import AddressPolicy, as_address
from .cutoff import Cutoff
from .errors import AddressRefused, EgressError, EgressTimeout

DNS_SECONDS = 30.0
# Origins a client keeps pools for; past this the one used longest ago is let go.
MAX_ORIGINS = 64

_current = threading.local()


def using(cutoff: Cutoff | None) -> None:
    """The request this thread is making from now on (None: none), whose sockets its connections hold."""
    _current.cutoff = cutoff


class NotSent(Exception):
    """The deadline passed before the request went out: it is not sent at all (nothing is sent late)."""


class _Held:
    """Mixed into urllib3's connections: each is held by the request using it, nothing is sent once its
    deadline has passed, and one whose last answer was framed in doubt is opened afresh before reuse."""

    sock: Any
    held_by: Cutoff | None = None
    doubtful = False

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        cutoff: Cutoff | None = getattr(_current, "cutoff", None)
        if cutoff is not None:
            cutoff.hold(self)

    def request(self, *args: Any, **kwargs: Any) -> None:
        cutoff: Cutoff | None = getattr(_current, "cutoff", None)
        if cutoff is not None:
            if cutoff.expired:  # waited too long (a lookup, a connection): not sent at all
                raise NotSent()
            cutoff.hold(self)  # a kept-alive connection, already open (or opened inside, and held then)
        if self.doubtful:  # both Transfer-Encoding and Content-Length last time: RFC 9112 says close it
            self.doubtful = False
            self.close()  # type: ignore[attr-defined]
        body = kwargs.get("body")
        if isinstance(body, bytes) and body and not kwargs.get("chunked"):
            # urllib3 sends the headers, then the body: two sends, two packets with TCP_NODELAY, for the
            # model's POST and every say. http.client's own endheaders(body) sends them as one.
            kwargs["body"] = None
            kwargs["headers"] = {**(kwargs.get("headers") or {}), "Content-Length": str(len(body))}
            self._with_headers = body
        try:
            super().request(*args, **kwargs)  # type: ignore[misc]
        finally:
            self._with_headers = None

    _with_headers: bytes | None = None

    def endheaders(self, message_body: Any = None, **kwargs: Any) -> None:
        super().endheaders(self._with_headers if message_body is None else message_body,  # type: ignore[misc]
                           **kwargs)


class _HTTPConnection(_Held, HTTPConnection):
    pass


class _HTTPSConnection(_Held, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


@dataclass
class Route:
    """How to reach one origin: a pool pinned to its checked address, or a proxy; the ``Host`` it names."""

    host_header: str
    pool: HTTPConnectionPool | None = None
    proxy: urllib3.ProxyManager | None = None
    address: str = ""
    expires: float = float("inf")
    used: float = 0.0


class Origins:
    """The routes of one client, made on first use of each origin and looked up again as they expire."""

    def __init__(self, *, policy: AddressPolicy | None, proxies: bool, tls: ssl.SSLContext, pool_size: int) -> None:
        self.policy = policy
        self._tls = tls
        self._pool_size = pool_size
        # Proxies from the environment (HTTPS_PROXY, HTTP_PROXY, NO_PROXY), as curl and requests read them;
        # never for requests under an address policy, whose address must be the one connected to.
        self._proxies = getproxies() if proxies and policy is None else {}
        self._proxy_managers: dict[str, urllib3.ProxyManager] = {}
        self._routes: dict[tuple[str, str, int], Route] = {}
        self._lock = threading.Lock()
        self._resolver: ThreadPoolExecutor | None = None

    def route(self, scheme: str, host: str, port: int, cutoff: Cutoff) -> Route:
        key = (scheme, host, port)
        route = self._routes.get(key)
        now = time.monotonic()
        if route is None or route.expires <= now:
            route = self._new_route(scheme, host, port, cutoff, route)
        route.used = now
        return route

    def forget(self, scheme: str, host: str, port: int) -> None:
        """A connection to the origin failed: look its address up again next time."""
        with self._lock:
            route = self._routes.get((scheme, host, port))
            if route is not None:
                route.expires = 0.0

    def _new_route(self, scheme: str, host: str, port: int, cutoff: Cutoff, old: Route | None) -> Route:
        default_port = 443 if scheme == "https" else 80
        bracketed = f"[{host}]" if ":" in host else host
        host_header = bracketed if port == default_port else f"{bracketed}:{port}"
        proxy_url = self._proxy_for(scheme, host)
        if proxy_url:
            route = Route(host_header, proxy=self._proxy_manager(proxy_url))
        else:
            address = self._address(host, port, cutoff)
            if old is not None and old.pool is not None and old.address == address:
                old.expires = time.monotonic() + DNS_SECONDS
                return old
            kwargs: dict[str, Any] = {"maxsize": self._pool_size, "block": False, "retries": False}
            if scheme == "https":
                kwargs.update(ssl_context=self._tls, server_hostname=host)
            pool = (_HTTPSPool if scheme == "https" else _HTTPPool)(address, port, **kwargs)
            route = Route(host_header, pool=pool, address=address, expires=time.monotonic() + DNS_SECONDS)
        with self._lock:
            replaced = self._routes.get((scheme, host, port))
            self._routes[(scheme, host, port)] = route
            evicted = []
            if len(self._routes) > MAX_ORIGINS:
                oldest = min(self._routes, key=lambda key: self._routes[key].used)
                evicted.append(self._routes.pop(oldest))
        for gone in ([replaced] if replaced is not None and replaced is not route else []) + evicted:
            if gone.pool is not None:
                gone.pool.close()  # its idle connections; one in use is closed as it comes back
        return route

    def _proxy_for(self, scheme: str, host: str) -> str:
        if not self._proxies or proxy_bypass(host):  # NO_PROXY
            return ""
        return str(self._proxies.get(scheme) or self._proxies.get("all") or "")

    def _proxy_manager(self, url: str) -> urllib3.ProxyManager:
        with self._lock:
            manager = self._proxy_managers.get(url)
            if manager is None:
                manager = urllib3.ProxyManager(url, num_pools=MAX_ORIGINS, maxsize=self._pool_size, retries=False,
                                               ssl_context=self._tls)
                manager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
                self._proxy_managers[url] = manager
            return manager

    def _address(self, host: str, port: int, cutoff: Cutoff) -> str:
        """The address to connect to: the first the name resolves to that the policy allows."""
        if as_address(host) is not None:
            candidates = [host.strip("[]")]
        else:
            candidates = [str(info[4][0]) for info in self._lookup(host, port, cutoff)]
        refused = []
        for address in candidates:
            problem = self.policy.problem(address) if self.policy is not None else None
            if problem is None:
                return address
            refused.append(problem)
        if refused:
            raise AddressRefused(f"{host} resolves only to addresses not allowed: {refused[0]}")
        raise EgressError(f"{host} has no address", sent=False)

    def _lookup(self, host: str, port: int, cutoff: Cutoff) -> list[Any]:
        """The C library's lookup takes no timeout: it runs on a helper thread and is waited for within the
        deadline (one still running then finishes on its own, unused)."""
        with self._lock:
            if self._resolver is None:  # made on first use, in the worker process (threads do not survive fork)
                self._resolver = ThreadPoolExecutor(4, thread_name_prefix="egress-resolve")
            resolver = self._resolver
        lookup = resolver.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
        try:
            return lookup.result(timeout=cutoff.left())
        except FutureTimeout:
            raise EgressTimeout(f"{host} could not be looked up in time", sent=False) from None
        except OSError:
            raise EgressError(f"{host} could not be resolved", sent=False) from None

    def close(self) -> None:
        with self._lock:
            routes, self._routes = list(self._routes.values()), {}
            managers, self._proxy_managers = list(self._proxy_managers.values()), {}
            resolver, self._resolver = self._resolver, None
        for route in routes:
            if route.pool is not None:
                route.pool.close()
        for manager in managers:
            manager.clear()
        if resolver is not None:
            resolver.shutdown(wait=False, cancel_futures=True)

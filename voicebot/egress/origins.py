"""Where a request goes: the address the client's policy allows (looked up within the request's deadline and
pinned), or the proxy the environment names for it.

libcurl looks names up itself, within the transfer's timeout; a client under
an address policy (the operator's endpoints) looks the name up here instead,
on a helper thread waited for only within the deadline, checks the address
and pins the connection to it (``CURLOPT_RESOLVE``): the TLS handshake still
names and verifies the host, and the ``Host`` header carries it. An origin's
address is looked up again after ``DNS_SECONDS``.
"""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any
from urllib.request import getproxies, proxy_bypass

from .addresses import AddressPolicy, as_address
from .cutoff import Cutoff
from .errors import AddressRefused, EgressError, EgressTimeout

DNS_SECONDS = 30.0
# Origins a client keeps routes for; past this the one used longest ago is let go.
MAX_ORIGINS = 64


@dataclass
class Route:
    """How to reach one origin: through ``proxy`` ('' for none), and pinned to ``resolve`` (curl's form,
    ``host:port:address``) where the client's policy checked the address."""

    proxy: str = ""
    resolve: list[str] = field(default_factory=list)
    expires: float = float("inf")
    used: float = 0.0


class Origins:
    """The routes of one client, made on first use of each origin and looked up again as they expire."""

    def __init__(self, *, policy: AddressPolicy | None, proxies: bool) -> None:
        self.policy = policy
        # Proxies from the environment (HTTPS_PROXY, HTTP_PROXY, NO_PROXY), as requests and urllib read them
        # (curl alone would ignore HTTP_PROXY); never for requests under an address policy, whose address
        # must be the one connected to.
        self._proxies = getproxies() if proxies and policy is None else {}
        self._routes: dict[tuple[str, str, int], Route] = {}
        self._lock = threading.Lock()
        self._resolver: ThreadPoolExecutor | None = None

    def route(self, scheme: str, host: str, port: int, cutoff: Cutoff) -> Route:
        key = (scheme, host, port)
        route = self._routes.get(key)
        now = time.monotonic()
        if route is None or route.expires <= now:
            route = self._new_route(scheme, host, port, cutoff)
            with self._lock:
                self._routes[key] = route
                if len(self._routes) > MAX_ORIGINS:
                    del self._routes[min(self._routes, key=lambda k: self._routes[k].used)]
        route.used = now
        return route

    def forget(self, scheme: str, host: str, port: int) -> None:
        """A connection to the origin failed: look its address up again next time."""
        with self._lock:
            route = self._routes.get((scheme, host, port))
            if route is not None:
                route.expires = 0.0

    def _new_route(self, scheme: str, host: str, port: int, cutoff: Cutoff) -> Route:
        if self.policy is None:
            return Route(proxy=self._proxy_for(scheme, host))
        address = self._address(host, port, cutoff)
        if as_address(host) is not None:  # an address in the URL: checked, and connected to as it is
            return Route()
        pinned = f"[{address}]" if ":" in address else address
        return Route(resolve=[f"{host}:{port}:{pinned}"], expires=time.monotonic() + DNS_SECONDS)

    def _proxy_for(self, scheme: str, host: str) -> str:
        if not self._proxies or proxy_bypass(host):  # NO_PROXY
            return ""
        return str(self._proxies.get(scheme) or self._proxies.get("all") or "")

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
            self._routes = {}
            resolver, self._resolver = self._resolver, None
        if resolver is not None:
            resolver.shutdown(wait=False, cancel_futures=True)

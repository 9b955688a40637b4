"""REDIS_URL's three shapes, and the redis-py client each needs.

- ``redis://``, ``rediss://``, ``unix://``: one server, or a proxy endpoint
  in front of many (Redis Cloud, Azure's Enterprise policy, Upstash).
- ``redis+cluster://[user:password@]host:port[,host:port...]`` (and
  ``rediss+cluster://``): a Redis Cluster, found from one or more seed nodes
  (ElastiCache and MemoryDB with cluster mode, ElastiCache Serverless,
  Memorystore for Redis Cluster, Azure's OSS clustering policy).
- ``redis+sentinel://[user:password@]host:26379[,host:26379...]/service[/db]``
  (and ``rediss+sentinel://``): the master that the Sentinels name for
  ``service``, followed through a failover. The password is the master's;
  ``?sentinel_password=`` gives the Sentinels' own, if they have one.

These are the URL conventions of the Python ecosystem (limits and
Flask-Limiter, prefect-redis, Dify).

The stores call Redis through ``patiently``, which tries again with
exponential back-off for ``REDIS_FAILOVER_SECONDS`` (a cluster or Sentinel
failover takes a few seconds), and no longer: the webhook must still answer
in time.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any, Callable, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..deadline import remaining_in_effect

T = TypeVar("T")

SINGLE_SCHEMES = ("redis", "rediss", "unix")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")

# Back-off between attempts while a failover runs: 50 ms, doubling, at most 500 ms.
_FIRST_BACKOFF = 0.05
_LONGEST_BACKOFF = 0.5

# What a failover or a resharding looks like from a client, for a while: try again.
TRANSIENT = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.ClusterDownError,
             redis.exceptions.TryAgainError, redis.exceptions.BusyLoadingError, redis.exceptions.ReadOnlyError,
             redis.exceptions.MasterDownError, redis.exceptions.SlotNotCoveredError)


@dataclass(frozen=True)
class RedisTarget:
    """A parsed REDIS_URL."""

    kind: str  # "single", "cluster" or "sentinel"
    url: str
    nodes: tuple[tuple[str, int], ...] = ()  # cluster seeds, or Sentinels
    tls: bool = False
    username: str | None = None
    password: str | None = None
    service: str = ""  # sentinel: the monitored master's name
    db: int = 0
    sentinel_password: str | None = None

    @property
    def replicated(self) -> bool:
        """A cluster or a Sentinel set: a failover can promote a replica."""
        return self.kind != "single"

    def describe(self) -> str:
        """What the start-up log and ``--check-config`` say: never a password."""
        if self.kind == "cluster":
            return f"Redis Cluster (seeds {', '.join(f'{h}:{p}' for h, p in self.nodes)})"
        if self.kind == "sentinel":
            return (f"Redis via Sentinel (service {self.service!r}, db {self.db}, "
                    f"sentinels {', '.join(f'{h}:{p}' for h, p in self.nodes)})")
        parts = urlsplit(self.url)
        where = parts.path if parts.scheme == "unix" else f"{parts.hostname}:{parts.port or 6379}"
        return f"Redis ({where})"


def parse(url: str) -> RedisTarget:
    """The target a REDIS_URL names; ValueError saying what is wrong (never quoting a password)."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme in SINGLE_SCHEMES:
        if scheme != "unix":
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
            if not parts.hostname:
                raise ValueError("has no host")
        return RedisTarget("single", url, tls=scheme == "rediss")
    if scheme not in CLUSTER_SCHEMES + SENTINEL_SCHEMES:
        raise ValueError("must start with redis://, rediss://, unix://, redis+cluster://, rediss+cluster://, "
                         "redis+sentinel:// or rediss+sentinel://")
    rest = url.split("://", 1)[1]
    hosts_and_path, _, query = rest.partition("?")
    netloc, _, path = hosts_and_path.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    nodes = tuple(_host_port(item, 26379 if scheme in SENTINEL_SCHEMES else 6379)
                  for item in hosts.split(",") if item.strip())
    if not nodes:
        raise ValueError("has no host")
    tls = scheme.startswith("rediss")
    if scheme in CLUSTER_SCHEMES:
        if path.strip("/"):
            raise ValueError("names a database, which a Redis Cluster does not have (it has only db 0)")
        return RedisTarget("cluster", url, nodes, tls, username, password)
    service, _, db = path.strip("/").partition("/")
    if not service:
        raise ValueError("names no service: redis+sentinel://host:26379/<service name>")
    if db and not db.isdigit():
        raise ValueError("has a database that is not a number")
    sentinel_password = parse_qs(query).get("sentinel_password", [None])[0]
    return RedisTarget("sentinel", url, nodes, tls, username, password, unquote(service), int(db or 0),
                       sentinel_password)


def _host_port(item: str, default_port: int) -> tuple[str, int]:
    item = item.strip()
    if item.startswith("["):  # [::1]:7000
        host, _, port = item[1:].partition("]")
        port = port.lstrip(":")
    else:
        host, _, port = item.rpartition(":") if ":" in item else (item, "", "")
    if not host:
        raise ValueError(f"has a node without a host ({item!r})")
    if port and (not port.isdigit() or not 1 <= int(port) <= 65535):
        raise ValueError(f"has a node whose port is not a TCP port ({item!r})")
    return host, int(port) if port else default_port


def patiently(operation: Callable[[], T], failover_seconds: float) -> T:
    """``operation()``, tried again with exponential back-off while a failover may be running.

    Only what a failover or a resharding looks like for a while (a lost
    connection, CLUSTERDOWN, TRYAGAIN, a master that became a replica) is
    tried again, for at most ``failover_seconds`` in all, and never past the
    webhook's budget when one is in effect (``deadline.in_effect``): the
    platform then gets its 503 in time, and sends the event again.
    """
    left = remaining_in_effect()
    if left is not None:  # a webhook's budget: keep a second of it for its answer
        failover_seconds = min(failover_seconds, left - 1.0)
    give_up_at = time.monotonic() + failover_seconds
    backoff = _FIRST_BACKOFF
    while True:
        try:
            return operation()
        except TRANSIENT:
            if time.monotonic() + backoff > give_up_at:
                raise
            time.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(_LONGEST_BACKOFF, backoff * 2)


def connect(url: str, *, timeout: float, max_connections: int, tls_verify: bool = True) -> Any:
    """One client (and so one set of connection pools) for this process, for any shape of REDIS_URL.

    A single server's pool blocks a thread until a connection is free
    instead of failing when every connection is busy. ``tls_verify=False``
    accepts a self-signed certificate, as Heroku Redis has.
    """
    target = parse(url)
    tls: dict[str, Any] = {"ssl_cert_reqs": "none"} if target.tls and not tls_verify else {}
    common: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout,
                              "health_check_interval": 30}
    if target.kind == "single":
        pool = redis.BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=timeout,
                                                     **common, **tls)
        return redis.Redis(connection_pool=pool)
    auth: dict[str, Any] = {"username": target.username, "password": target.password}
    if target.kind == "cluster":
        from redis.cluster import ClusterNode, RedisCluster

        # One more attempt at once, on the topology read again after an error; ``patiently`` backs off.
        return RedisCluster(startup_nodes=[ClusterNode(host, port)  # type: ignore[no-untyped-call]
                                           for host, port in target.nodes],
                            ssl=target.tls, max_connections=max_connections, retry=Retry(NoBackoff(), 1),
                            **auth, **common, **tls)
    from redis.sentinel import Sentinel

    sentinel = Sentinel(list(target.nodes), socket_timeout=timeout,  # type: ignore[no-untyped-call]
                        socket_connect_timeout=timeout,
                        sentinel_kwargs={"password": target.sentinel_password, "socket_timeout": timeout,
                                         "socket_connect_timeout": timeout})
    return sentinel.master_for(target.service, db=target.db,  # type: ignore[no-untyped-call]
                               ssl=target.tls, max_connections=max_connections, **auth, **common, **tls)

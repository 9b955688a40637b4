"""Session stores, chosen by configuration: memory when REDIS_URL is unset, Redis otherwise."""

from __future__ import annotations

from typing import Any, Mapping

from ..config import lock_lease_seconds
from .base import FRESH_LEASE_SECONDS, CallRecord, SessionStore
from .memory import MemoryStore
from .redis import RedisStore
from .settings import redis_failover_seconds, redis_wait_replicas

__all__ = ["CallRecord", "SessionStore", "MemoryStore", "RedisStore", "build_store"]


def build_store(config: Mapping[str, Any]) -> SessionStore:
    store = _store(config)
    store.fresh_lease_seconds = fresh_lease_seconds(config)
    return store


def fresh_lease_seconds(config: Mapping[str, Any]) -> float:
    """How long a lease needs no renewing before the next step of a turn.

    The settings check guarantees only that a lease outlives the model's
    deadline by half a second; a step (the model's call, a say) may start
    when the lease has at least the model's deadline and 0.4 s left, the
    same bound the shortest lease leaves with FRESH_LEASE_SECONDS. A longer
    lease (the default is the deadline plus 2 s) spends that slack rather
    than a Redis round trip before every streamed sentence.
    """
    lease = lock_lease_seconds(config)
    return max(FRESH_LEASE_SECONDS, lease - float(config["LLM_TIMEOUT_SECONDS"]) - 0.4)


def _store(config: Mapping[str, Any]) -> SessionStore:
    ttl = config["SESSION_TTL_SECONDS"]
    lease = lock_lease_seconds(config)
    if not config["REDIS_URL"]:
        return MemoryStore(ttl, lease, max_calls=config["MAX_LIVE_CALLS"], max_lines=config["MAX_TRANSCRIPT_LINES"])
    return RedisStore(
        config["REDIS_URL"],
        ttl_seconds=ttl,
        lease_seconds=lease,
        prefix=config["REDIS_PREFIX"],
        timeout=config["REDIS_TIMEOUT_SECONDS"],
        tls_verify=config["REDIS_TLS_VERIFY"],
        max_lines=config["MAX_TRANSCRIPT_LINES"],
        failover_seconds=redis_failover_seconds(config),
        wait_replicas=redis_wait_replicas(config),
        # Every thread of the worker may hold a connection, plus room for
        # health checks.
        max_connections=config["WEB_THREADS"] + 4,
    )

"""Session stores, chosen by configuration: memory when REDIS_URL is unset, Redis otherwise."""

from __future__ import annotations

from typing import Any, Mapping

from ..config import lock_lease_seconds
from .base import CallRecord, SessionStore
from .memory import MemoryStore
from .redis import RedisStore
from .settings import redis_failover_seconds, redis_wait_replicas

__all__ = ["CallRecord", "SessionStore", "MemoryStore", "RedisStore", "build_store"]


def build_store(config: Mapping[str, Any]) -> SessionStore:
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

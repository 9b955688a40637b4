"""The session store's settings, declared here and added to the one registry by ``voicebot.platforms``, and
what they mean once derived (REDIS_URL names the kind of Redis)."""

from __future__ import annotations

from typing import Any, Mapping

from ..config import Setting, flag, non_negative_float, positive_float, text
from .redis_url import parse


def _redis_url(value: str) -> str:
    if value:
        parse(value)  # ValueError saying what is wrong, never quoting a password
    return value


def _wait_replicas(value: str) -> int:
    number = int(value)
    if number < -1:
        raise ValueError("must be -1 (derived), 0 or more")
    return number


SETTINGS: tuple[Setting, ...] = (
    Setting("REDIS_URL", "", _redis_url,
            "Session store. Unset: in-process memory (one worker only). `redis://`, `rediss://` or "
            "`unix://`: one Redis (or a proxy endpoint), shared by every worker and instance. "
            "`redis+cluster://host:port,host:port` (`rediss+cluster://`): a Redis Cluster from its seed nodes. "
            "`redis+sentinel://host:26379,host:26379/service[/db]` (`rediss+sentinel://`): the master "
            "Sentinel names, followed through a failover."),
    Setting("REDIS_PREFIX", "voicebot", text,
            "Namespace of every Redis key voicebot writes."),
    Setting("REDIS_TIMEOUT_SECONDS", 2.0, positive_float,
            "Connect and socket timeout for Redis commands."),
    Setting("REDIS_FAILOVER_SECONDS", 0.0, non_negative_float,
            "How long each Redis step is tried again, backing off, while a master is lost. 0: 6 s on "
            "cluster and Sentinel URLs (a replica is promoted in a few seconds), none on one server.",
            shown="0 (derived)"),
    Setting("REDIS_WAIT_REPLICAS", -1, _wait_replicas,
            "Replicas each turn's write must reach (Redis's WAIT, up to 200 ms) before the turn is answered, so "
            "an answered turn survives its master's failover. -1: 1 on cluster and Sentinel URLs, 0 on one "
            "server. A turn that reaches fewer is still answered, with a WARNING.", shown="-1 (derived)"),
    Setting("REDIS_TLS_VERIFY", True, flag,
            "With `rediss://`: 1 checks Redis's certificate against the system's CAs; 0 accepts a "
            "self-signed one (Heroku Redis uses those), still encrypted."),
)


def store_description(config: Mapping[str, Any]) -> str:
    """Which store REDIS_URL names, for the start-up log and --check-config: never a password."""
    if not config["REDIS_URL"]:
        return "in-memory"
    return parse(config["REDIS_URL"]).describe()


def redis_failover_seconds(config: Mapping[str, Any]) -> float:
    """How long a Redis step is tried again through a failover: 0 (derived) is 6 s on a cluster or
    Sentinel URL, where a replica is promoted in a few seconds, and nothing on one server."""
    seconds: float = config["REDIS_FAILOVER_SECONDS"]
    if seconds > 0 or not config["REDIS_URL"]:
        return seconds
    return 6.0 if parse(config["REDIS_URL"]).replicated else 0.0


def redis_wait_replicas(config: Mapping[str, Any]) -> int:
    """Replicas a turn's write must reach: REDIS_WAIT_REPLICAS, or (-1) 1 where a failover can promote one."""
    wanted: int = config["REDIS_WAIT_REPLICAS"]
    if wanted >= 0 or not config["REDIS_URL"]:
        return max(0, wanted)
    return 1 if parse(config["REDIS_URL"]).replicated else 0

"""Times as voicebot writes them: UTC, ISO 8601 to the millisecond, ``Z`` for the zone."""

from __future__ import annotations

from datetime import datetime, timezone


def iso(epoch: float) -> str:
    """``2026-12-07T01:06:09.123Z`` for a Unix time."""
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")

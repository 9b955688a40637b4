"""voicebot: the HTTP backend behind an AI phone agent."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from flask import Flask


def create_app(test_config: Mapping[str, Any] | None = None) -> "Flask":
    """Build the app from the environment, with ``test_config`` laid over it (``voicebot.factory``)."""
    # Imported when called, not with the package: gunicorn's master imports this package for its
    # settings, and must not load prometheus_client (or anything else a worker builds) before the
    # metrics directory is set.
    from .factory import create_app as build

    return build(test_config)


def close_app(app: "Flask") -> None:
    """Let go of every connection the app holds (gunicorn's worker_exit); the app is not used afterwards."""
    from .factory import close_app as close

    close(app)

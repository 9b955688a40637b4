"""The objects the app shares across requests and workers' threads, built once by the factory.

``create_app`` builds one ``Runtime`` and keeps it on the Flask app; views
reach it through ``runtime()`` (the current app's), background workers and
tests through ``runtime_of(app)``. Everything on it is typed: a platform's own
state (Twilio's validator, VoIPBin's bridge, the campaign book) is kept in
``platforms`` under the platform's name and read back through that
platform's own typed accessor.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol

from flask import Flask, current_app

from .admission import Admission
from .metrics import Gauge

if TYPE_CHECKING:
    from .context import ContextSource
    from .conversation import Conversation
    from .llm import LLM
    from .llm.health import LLMHealth
    from .operator_tools import ToolCaller
    from .records.outbox import Outbox
    from .speaker import Dialler
    from .stores import SessionStore

# The one key under which Flask keeps it (Flask's own convention for extensions' state).
EXTENSION = "voicebot"


class Worker(Protocol):
    """A background thread a worker process runs after the fork: the reaper, deliveries, campaigns."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def join(self, timeout: float | None = None) -> None: ...


@dataclass
class Runtime:
    """What one app (one worker process) holds: the store, the records, the model, each platform's calls.

    ``conversations`` (by platform name: its namespace in the store) and
    ``diallers`` are filled as the platforms register; ``closers`` are called
    when the worker exits, newest first; ``workers`` are made and started in
    each worker after the fork (``voicebot.background``); ``gauges`` are read
    at each scrape of ``/metrics``; ``draining`` is set when the worker is
    told to stop, so that what holds a connection for long lets go of it.
    """

    store: "SessionStore"
    records: "Outbox"
    llm: "LLM"
    llm_health: "LLMHealth"
    admission: Admission
    tool_caller: "ToolCaller | None" = None
    context: "ContextSource | None" = None
    conversations: dict[str, "Conversation"] = field(default_factory=dict)
    diallers: dict[str, "Dialler"] = field(default_factory=dict)
    closers: list[Callable[[], None]] = field(default_factory=list)
    gauges: list[Gauge] = field(default_factory=list)
    workers: list[Callable[[], Worker]] = field(default_factory=list)
    running: list[Worker] = field(default_factory=list)
    draining: threading.Event = field(default_factory=threading.Event)
    platforms: dict[str, Any] = field(default_factory=dict)
    # Call sockets this worker holds, of every kind (MAX_SOCKET_CALLS): each holds a thread for its call.
    socket_slots: threading.BoundedSemaphore = field(default_factory=lambda: threading.BoundedSemaphore(1))

    def install(self, app: Flask) -> None:
        app.extensions[EXTENSION] = self


def runtime_of(app: Flask) -> Runtime:
    """The runtime the factory built for ``app``."""
    built: Runtime = app.extensions[EXTENSION]
    return built


def runtime() -> Runtime:
    """The runtime of the app handling this request (or pushed as the current app)."""
    return runtime_of(current_app._get_current_object())  # type: ignore[attr-defined]

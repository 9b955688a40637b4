"""A loopback HTTP server that misbehaves on purpose, for the tests of voicebot's outgoing requests.

Each request it reads whole (head and Content-Length body) and answers with the next of its ``answers``:
bytes to send as they are, or a callable given the socket (to trickle, to send gigabytes, to close). It
counts the connections it accepted and the requests it read, which is what "sent once" is checked by.
"""

from __future__ import annotations

import functools
import socket
import threading
import time
import zlib
from typing import Callable, Union

Answer = Union[bytes, str, Callable[[socket.socket], None]]


class HostileServer:
    def __init__(self, answers: list[Answer], *, repeat_last: bool = False) -> None:
        self.answers = list(answers)
        self.repeat_last = repeat_last
        self.connections = 0
        self.requests: list[bytes] = []  # each request's head, as it arrived
        self._lock = threading.Lock()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _next(self) -> Answer | None:
        with self._lock:
            if not self.answers:
                return None
            if self.repeat_last and len(self.answers) == 1:
                return self.answers[0]
            return self.answers.pop(0)

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        buffer = b""
        try:
            with conn:
                while True:
                    while b"\r\n\r\n" not in buffer:
                        data = conn.recv(65536)
                        if not data:
                            return
                        buffer += data
                    head, _, buffer = buffer.partition(b"\r\n\r\n")
                    length = int(next((line.split(b":")[1] for line in head.split(b"\r\n")
                                       if line.lower().startswith(b"content-length")), b"0"))
                    while len(buffer) < length:
                        data = conn.recv(65536)
                        if not data:
                            return
                        buffer += data
                    buffer = buffer[length:]
                    with self._lock:
                        self.requests.append(head)
                    answer = self._next()
                    if answer is None or answer == "close":
                        return
                    if callable(answer):
                        answer(conn)
                    else:
                        conn.sendall(answer)  # type: ignore[arg-type]
        except OSError:
            return

    def close(self) -> None:
        self.sock.close()


def response(body: bytes, *headers: str, status: str = "200 OK", length: bool = True) -> bytes:
    lines = [f"HTTP/1.1 {status}", "Content-Type: application/json", *headers]
    if length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def huge(size: int, *, chunked: bool = False) -> Callable[[socket.socket], None]:
    """``size`` bytes of a JSON-looking body, sent as fast as the client reads (with a length, or chunked)."""
    def send(conn: socket.socket) -> None:
        piece = b" " * 65536
        if chunked:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        else:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % size)
        sent = 0
        while sent < size:
            conn.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            sent += len(piece)
    return send


@functools.lru_cache(maxsize=2)
def _bomb(inflated: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    spaces = b" " * (1 << 20)
    return b"".join(compressor.compress(spaces) for _ in range(inflated >> 20)) + compressor.flush()


def gzip_bomb(inflated: int) -> Callable[[socket.socket], None]:
    """A small gzip body that inflates to ``inflated`` bytes (1 GiB of spaces is about 1 MB compressed)."""
    body = _bomb(inflated)

    def send(conn: socket.socket) -> None:
        conn.sendall(response(body, "Content-Encoding: gzip"))
    return send


def trickle(data: bytes, every: float) -> Callable[[socket.socket], None]:
    def send(conn: socket.socket) -> None:
        for byte in data:
            conn.sendall(bytes([byte]))
            time.sleep(every)
    return send


def late(data: bytes, seconds: float) -> Callable[[socket.socket], None]:
    """A whole answer, sent after ``seconds`` (a model thinking): the client waits on an idle socket meanwhile."""
    def send(sock: socket.socket) -> None:
        time.sleep(seconds)
        sock.sendall(data)
    return send


class PeakMemory:
    """This process's resident memory, sampled every few ms while in the ``with``: the most it rose by (MB)."""

    def __enter__(self) -> "PeakMemory":
        self.start = self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())

    @property
    def rose_mb(self) -> float:
        return (self.peak - self.start) / (1 << 20)


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


def then_close(data: bytes) -> Callable[[socket.socket], None]:
    """``data``, and the connection closed right after (a body cut short, a server that died)."""
    def send(conn: socket.socket) -> None:
        conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)
    return send

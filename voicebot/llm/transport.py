"""The Messages API over kept-alive HTTP/1.1, with a wall-clock deadline kept by the calling thread's reads.

Why not the SDK's own HTTP stack for a turn: building its request (headers,
a deep copy of the body, its middleware) and httpx's HTTP/1.1 machinery cost
about 0.8 ms of CPU per call, the largest single cost of a turn
(bench/breakdown.py), while a turn needs one POST of JSON and JSON or
server-sent events back. So a turn's bytes go over one plain socket per
thread, and the SDK keeps the rest: its headers (API version, key, user
agent), its base URL, and its typed errors for every status the API answers
(``AnthropicLLM`` builds them from the answer).

An HTTP client's timeout bounds each read, not the call: a model that
trickles its answer a few bytes at a time holds a turn for as long as it
likes. Running the call on another thread and waiting for it with a timeout
bounds it, but costs every turn a hand-off between threads (measured: ~0.7 ms
of CPU per turn in a loaded worker). Instead, the turn's thread sets its
deadline here, and every read and write of the connection waits at most the
time left: the call runs in the turn's own thread and still ends on time.

Opening a connection is the exception: the name lookup inside it takes no
timeout at all, so a new connection is opened on a helper thread and waited
for within the deadline. Connections are kept alive, so that is rare.
"""

from __future__ import annotations

import select
import socket
import ssl
import threading
import time
import zlib
from concurrent.futures import Executor, Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from typing import Callable, Iterator, Mapping
from urllib.parse import urlsplit

_local = threading.local()

# A thread's connection waits this long for its next turn. A worker's threads
# take turns in order, so a thread comes back only after all the others have
# had one; a connection closed meanwhile by the server is seen (readable at
# EOF) and replaced before it is used.
KEEPALIVE_SECONDS = 60.0
# Without a deadline (nothing in voicebot calls the model so), a read still ends.
_NO_DEADLINE_SECONDS = 600.0
_MAX_HEAD = 64 * 1024


class WireError(Exception):
    """The connection failed or the answer is not HTTP/1.1 as the API speaks it."""


class WireTimeout(WireError):
    """The model call's deadline passed."""


class _Closed(WireError):
    """The server closed the connection before answering: on a kept-alive connection, tried once more."""


@contextmanager
def wall_clock_deadline(seconds: float) -> Iterator[None]:
    """Every model connection's I/O in this thread ends within ``seconds`` from now."""
    previous = getattr(_local, "deadline", None)
    _local.deadline = time.monotonic() + seconds
    try:
        yield
    finally:
        _local.deadline = previous


def _left() -> float:
    deadline: float | None = getattr(_local, "deadline", None)
    if deadline is None:
        return _NO_DEADLINE_SECONDS
    left = deadline - time.monotonic()
    if left <= 0:
        raise WireTimeout("the model call's deadline has passed")
    return left


class Answer:
    """One HTTP answer: its status, its headers (names in lower case), and its body as it arrives."""

    def __init__(self, status: int, headers: dict[str, str], body: Iterator[bytes]) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def encoded(self) -> str:
        """A content coding the server applied though none was asked for ('' for none)."""
        coding = self.headers.get("content-encoding", "").strip().lower()
        return "" if coding in ("", "identity") else coding

    def read(self) -> bytes:
        """The whole body, decoded if the server compressed it anyway (gzip, deflate)."""
        data = b"".join(self.body)
        if not self.encoded:
            return data
        if self.encoded not in ("gzip", "x-gzip", "deflate"):
            raise WireError(f"the answer is in a content coding we cannot read: {self.encoded}")
        try:
            return zlib.decompress(data, 47 if "gzip" in self.encoded else 15)
        except zlib.error:
            raise WireError(f"the answer's {self.encoded} body is corrupt") from None


class _Connection:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.used_at = time.monotonic()
        self.reusable = True
        self.answered = 0  # answers read whole on this connection

    def stale(self) -> bool:
        if time.monotonic() - self.used_at > KEEPALIVE_SECONDS:
            return True
        try:  # readable while idle: the server closed it (EOF), or sent what nobody asked for
            return bool(select.select([self.sock], [], [], 0)[0])
        except (OSError, ValueError):
            return True

    def send(self, data: bytes) -> None:
        try:
            self.sock.settimeout(_left())
            self.sock.sendall(data)
        except socket.timeout:
            raise WireTimeout("the model call's deadline passed while sending") from None
        except OSError as exc:
            raise _Closed(f"sending failed: {type(exc).__name__}") from None

    def _more(self) -> bytes:
        try:
            self.sock.settimeout(_left())
            data = self.sock.recv(65536)
        except socket.timeout:
            raise WireTimeout("the model call's deadline passed while reading") from None
        except OSError as exc:
            raise _Closed(f"reading failed: {type(exc).__name__}") from None
        if not data:
            raise _Closed("the server closed the connection")
        return data

    def head(self) -> tuple[int, dict[str, str]]:
        while True:
            while b"\r\n\r\n" not in self.buffer:
                if len(self.buffer) > _MAX_HEAD:
                    raise WireError("the answer's head is too large")
                self.buffer += self._more()
            raw, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            lines = raw.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
                raise WireError("the answer is not HTTP/1.1")
            status = int(parts[1])
            if 100 <= status < 200:
                continue  # an interim answer: the real one follows
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, colon, value = line.partition(":")
                if not colon:
                    raise WireError("the answer has a malformed header")
                name = name.strip().lower()
                value = value.strip()
                headers[name] = f"{headers[name]}, {value}" if name in headers else value
            if parts[0] == "HTTP/1.0" or "close" in headers.get("connection", "").lower():
                self.reusable = False
            return status, headers

    def body(self, headers: dict[str, str], keep: bool) -> Iterator[bytes]:
        """The body's bytes as they arrive; the connection is kept (if ``keep``) only once it has been read whole."""
        finished = keep
        if "chunked" in headers.get("transfer-encoding", "").lower():
            yield from self._chunked()
        elif "content-length" in headers:
            try:
                length = int(headers["content-length"])
            except ValueError:
                raise WireError("the answer's Content-Length is not a number") from None
            yield from self._exactly(length)
        else:  # read to the end: the connection ends with the body
            finished = False
            try:
                while True:
                    if self.buffer:
                        piece, self.buffer = self.buffer, b""
                        yield piece
                    self.buffer = self._more()
            except _Closed:
                return
        self.reusable = finished
        self.answered += 1

    def _exactly(self, length: int) -> Iterator[bytes]:
        while length > 0:
            if not self.buffer:
                self.buffer = self._more()
            piece, self.buffer = self.buffer[:length], self.buffer[length:]
            length -= len(piece)
            yield piece

    def _line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            if len(self.buffer) > _MAX_HEAD:
                raise WireError("a chunk's size line is too long")
            self.buffer += self._more()
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def _chunked(self) -> Iterator[bytes]:
        while True:
            try:
                size = int(self._line().split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise WireError("a chunk's size is not a number") from None
            if size == 0:
                while self._line():  # trailers, up to the empty line
                    pass
                return
            yield from self._exactly(size)
            if self._line():
                raise WireError("a chunk does not end where its size says")

    def close(self) -> None:
        self.reusable = False
        try:
            self.sock.close()
        except OSError:
            pass


def _close_unclaimed(opening: "Future[socket.socket]") -> None:
    """A connection opened after its caller gave up is nobody's."""
    if opening.exception() is None:
        opening.result().close()


class MessagesWire:
    """``POST /v1/messages`` on one kept-alive connection per thread, every read held to the thread's deadline.

    A thread makes one call at a time, so it keeps one connection, used again
    by its next turn. A kept-alive connection the server closed while it was
    idle is seen before use and replaced. One that fails after all, before a
    byte of the answer came, is tried once more on a new connection (as
    browsers and urllib3 do): the server let it go as the request left. Had
    the server read it and died, the model is asked twice, and one answer used.
    """

    def __init__(self, base_url: str, headers: Mapping[str, object], helpers: Callable[[], Executor],
                 tls: Callable[[], ssl.SSLContext]) -> None:
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"the model's base URL must be http(s)://host: {base_url!r}")
        self.url = base_url.rstrip("/") + "/v1/messages"
        self._host = url.hostname
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._tls = tls() if url.scheme == "https" else None
        self._helpers = helpers
        host = url.netloc.rpartition("@")[2]
        sent = {name: value for name, value in headers.items() if isinstance(value, str)
                and name.lower() not in ("host", "content-length", "connection", "accept-encoding")}
        self._head = (f"POST {url.path.rstrip('/')}/v1/messages HTTP/1.1\r\nHost: {host}\r\n"
                      + "".join(f"{name}: {value}\r\n" for name, value in sent.items())).encode("latin-1")
        self._local = threading.local()
        self._all: set[_Connection] = set()
        self._lock = threading.Lock()

    @contextmanager
    def post(self, body: bytes) -> Iterator[Answer]:
        """The answer to one request, its body read within the ``with``: a body left unread closes the connection."""
        request = self._head + b"Content-Length: %d\r\n\r\n" % len(body) + body
        connection, fresh = self._connection()
        try:
            try:
                connection.send(request)
                status, headers = connection.head()
            except _Closed:
                self._drop(connection)
                if fresh or connection.buffer:  # a new connection, or one that began to answer: not again
                    raise
                connection, fresh = self._open(), True  # the server let it go while it was idle: once more
                connection.send(request)
                status, headers = connection.head()
            keep, connection.reusable = connection.reusable, False  # until the body has been read whole
            yield Answer(status, headers, connection.body(headers, keep))
        except BaseException:
            self._drop(connection)
            raise
        finally:
            connection.used_at = time.monotonic()
            if not connection.reusable:
                self._drop(connection)

    def _connection(self) -> tuple[_Connection, bool]:
        kept: _Connection | None = getattr(self._local, "connection", None)
        if kept is not None and kept.reusable and not kept.stale():
            return kept, False
        if kept is not None:
            self._drop(kept)
        return self._open(), True

    def _open(self) -> _Connection:
        if getattr(_local, "deadline", None) is None:
            sock = socket.create_connection((self._host, self._port), _NO_DEADLINE_SECONDS)
        else:
            left = _left()
            opening = self._helpers().submit(socket.create_connection, (self._host, self._port), left)
            try:
                sock = opening.result(left)
            except FutureTimeout:
                opening.add_done_callback(_close_unclaimed)
                raise WireTimeout(f"no connection to {self._host} within the model call's deadline") from None
            except OSError as exc:
                raise WireError(f"no connection to {self._host}: {type(exc).__name__}") from None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls is not None:
                sock.settimeout(_left())
                sock = self._tls.wrap_socket(sock, server_hostname=self._host)
        except socket.timeout:
            sock.close()
            raise WireTimeout(f"no TLS with {self._host} within the model call's deadline") from None
        except (OSError, ssl.SSLError) as exc:
            sock.close()
            raise WireError(f"no TLS with {self._host}: {type(exc).__name__}") from None
        connection = _Connection(sock)
        self._local.connection = connection
        with self._lock:
            self._all.add(connection)
        return connection

    def _drop(self, connection: _Connection) -> None:
        connection.close()
        if getattr(self._local, "connection", None) is connection:
            self._local.connection = None
        with self._lock:
            self._all.discard(connection)

    def close(self) -> None:
        with self._lock:
            connections, self._all = self._all, set()
        for connection in connections:
            connection.close()


def proxy_configured() -> bool:
    """An HTTP(S) proxy from the environment, which only the SDK's own HTTP client honours."""
    from urllib.request import getproxies

    return any(scheme in getproxies() for scheme in ("http", "https", "all"))

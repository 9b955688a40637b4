"""HTTP/1.1 on kept-alive connections, every read and write held to the calling thread's wall-clock deadline.

Two kinds of request carry a turn: the model's ``POST /v1/messages`` and the
platform's REST calls (VoIPBin's ``say`` for each sentence). Each is a small
JSON body out and JSON or server-sent events back, and in a loaded worker
their cost is the client library's, not the bytes': the SDK's request
building and httpx's HTTP/1.1 machinery were the largest single cost of a
turn (bench/breakdown.py), and requests' per-call merging of sessions,
cookies and proxy settings from the environment a large share of a VoIPBin
worker's CPU (py-spy, bench/first_word.py): docs/benchmarks.md has the
figures. So their bytes go over plain
sockets here, and the SDK and the platform clients keep the rest: headers,
URLs, typed errors.

An HTTP client's timeout bounds each read, not the call: a server that
trickles its answer a few bytes at a time holds a turn for as long as it
likes. Running the call on another thread and waiting for it with a timeout
bounds it, but costs every turn a hand-off between threads (docs/benchmarks.md).
Instead, the calling thread sets its
deadline here (``wall_clock_deadline``), and every read and write waits at
most the time left: the call runs in the caller's own thread and still ends
on time.

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

# An idle connection is kept this long. Servers keep theirs longer (nginx 75 s,
# most load balancers more), so the server rarely closes one as it is used; one
# it closed while idle is seen (readable at EOF) and replaced before use.
KEEPALIVE_SECONDS = 60.0
# Without a deadline (nothing in voicebot makes a request so), a read still ends.
_NO_DEADLINE_SECONDS = 600.0
_MAX_HEAD = 64 * 1024


class WireError(Exception):
    """The connection failed or the answer is not HTTP/1.1 as the API speaks it.

    ``sent`` is False when no connection was made, so nothing of the request
    reached the server: doing it again cannot do it twice.
    """

    def __init__(self, message: str, *, sent: bool = True) -> None:
        super().__init__(message)
        self.sent = sent


class WireTimeout(WireError):
    """The deadline passed."""


class _Closed(WireError):
    """The server closed the connection before answering: on a kept-alive connection, tried once more."""


def time_left() -> float:
    """Seconds left of this thread's wall-clock deadline (infinite outside one)."""
    deadline = getattr(_local, "deadline", None)
    return float("inf") if deadline is None else deadline - time.monotonic()


@contextmanager
def wall_clock_deadline(seconds: float) -> Iterator[None]:
    """Every request's I/O in this thread ends within ``seconds`` from now (nested: the inner one while it lasts)."""
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
        raise WireTimeout("the deadline has passed")
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
            raise WireTimeout("the deadline passed while sending") from None
        except OSError as exc:
            raise _Closed(f"sending failed: {type(exc).__name__}") from None

    def _more(self) -> bytes:
        try:
            self.sock.settimeout(_left())
            data = self.sock.recv(65536)
        except socket.timeout:
            raise WireTimeout("the deadline passed while reading") from None
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


def _unsafe(text: str) -> bool:
    """A line break (or any control character) would end the header or request line early: an injection."""
    return any(ord(char) < 32 or ord(char) == 127 for char in text)


def _close_unclaimed(opening: "Future[socket.socket]") -> None:
    """A connection opened after its caller gave up is nobody's."""
    if opening.exception() is None:
        opening.result().close()


class Wire:
    """Requests to one server (``base_url``), on kept-alive connections shared by the threads of a process.

    A request takes the connection used last (the least likely to have been
    closed meanwhile) or opens one, and gives it back once its answer has been
    read whole; so there are as many connections as requests at once, not as
    threads. A kept-alive connection the server closed while it was idle is
    seen before use and replaced. One that fails after all, before a byte of
    the answer came, is tried once more on a new connection when ``again``
    (as browsers and urllib3 do for requests that may be repeated): the server
    let it go as the request left. Had the server read it and died, it is
    done twice; so a request that must not be is sent with ``again=False``,
    and that failure is the caller's to judge (``WireError.sent``).
    """

    def __init__(self, base_url: str, headers: Mapping[str, object], helpers: Callable[[], Executor],
                 tls: Callable[[], ssl.SSLContext]) -> None:
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"the base URL must be http(s)://host: {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._host = url.hostname
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._tls = tls() if url.scheme == "https" else None
        self._helpers = helpers
        self._prefix = url.path.rstrip("/")
        host = url.netloc.rpartition("@")[2]
        sent = {name: value for name, value in headers.items() if isinstance(value, str)
                and name.lower() not in ("host", "content-length", "connection", "accept-encoding")}
        if any(_unsafe(name) or _unsafe(value) for name, value in sent.items()):
            raise ValueError("a header name or value has a line break or control character in it")
        self._fixed = (f"Host: {host}\r\n" + "".join(f"{name}: {value}\r\n" for name, value in sent.items()))
        self._idle: list[_Connection] = []
        self._all: set[_Connection] = set()
        self._lock = threading.Lock()

    @contextmanager
    def request(self, method: str, path: str, body: bytes | None = None, *, headers: Mapping[str, str] | None = None,
                again: bool = True) -> Iterator[Answer]:
        """The answer to one request, its body read within the ``with``: a body left unread closes the connection.

        ``path`` follows the base URL's own path, query string included.
        """
        if any(_unsafe(name) or _unsafe(value) for name, value in (headers or {}).items()) or _unsafe(path):
            raise ValueError("a header or the path has a line break or control character in it")
        extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        if body is None and method in ("GET", "HEAD", "DELETE"):
            length = ""
        else:
            body = body or b""
            length = f"Content-Length: {len(body)}\r\n"
        request = (f"{method} {self._prefix}{path} HTTP/1.1\r\n{self._fixed}{extra}{length}\r\n"
                   ).encode("latin-1") + (body or b"")
        connection, fresh = self._connection()
        try:
            try:
                connection.send(request)
                status, headers_in = connection.head()
            except _Closed:
                self._drop(connection)
                if fresh or connection.buffer or not again:  # new, or began to answer, or not to be repeated
                    raise
                connection, fresh = self._open(), True  # the server let it go while it was idle: once more
                connection.send(request)
                status, headers_in = connection.head()
            keep, connection.reusable = connection.reusable, False  # until the body has been read whole
            yield Answer(status, headers_in, connection.body(headers_in, keep))
        except BaseException:
            self._drop(connection)
            raise
        else:
            connection.used_at = time.monotonic()
            if not connection.reusable:
                self._drop(connection)
                return
            with self._lock:
                self._idle.append(connection)
                # The one used longest ago is at the bottom: past its keep-alive, it goes (one at a
                # time, so that a quiet spell after a peak lets the peak's connections go).
                oldest = self._idle[0]
                expired = connection.used_at - oldest.used_at > KEEPALIVE_SECONDS
                if expired:
                    self._idle.pop(0)
            if expired:
                self._drop(oldest)

    def _connection(self) -> tuple[_Connection, bool]:
        while True:
            with self._lock:
                kept = self._idle.pop() if self._idle else None
            if kept is None:
                return self._open(), True
            if not kept.stale():
                return kept, False
            self._drop(kept)

    def _open(self) -> _Connection:
        if getattr(_local, "deadline", None) is None:
            try:
                sock = socket.create_connection((self._host, self._port), _NO_DEADLINE_SECONDS)
            except OSError as exc:
                raise WireError(f"no connection to {self._host}: {type(exc).__name__}", sent=False) from None
        else:
            left = _left()
            opening = self._helpers().submit(socket.create_connection, (self._host, self._port), left)
            try:
                sock = opening.result(left)
            except FutureTimeout:
                opening.add_done_callback(_close_unclaimed)
                raise WireTimeout(f"no connection to {self._host} within the deadline", sent=False) from None
            except OSError as exc:
                raise WireError(f"no connection to {self._host}: {type(exc).__name__}", sent=False) from None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls is not None:
                sock.settimeout(_left())
                sock = self._tls.wrap_socket(sock, server_hostname=self._host)
        except socket.timeout:
            sock.close()
            raise WireTimeout(f"no TLS with {self._host} within the deadline", sent=False) from None
        except (OSError, ssl.SSLError) as exc:
            sock.close()
            raise WireError(f"no TLS with {self._host}: {type(exc).__name__}", sent=False) from None
        connection = _Connection(sock)
        with self._lock:
            self._all.add(connection)
        return connection

    def _drop(self, connection: _Connection) -> None:
        connection.close()
        with self._lock:
            self._all.discard(connection)

    def close(self) -> None:
        with self._lock:
            connections, self._all, self._idle = self._all, set(), []
        for connection in connections:
            connection.close()


def proxy_configured() -> bool:
    """An HTTP(S) proxy from the environment, which the wire does not speak: the libraries' own clients do."""
    from urllib.request import getproxies

    return any(scheme in getproxies() for scheme in ("http", "https", "all"))

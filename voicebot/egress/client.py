"""``HTTP``: the one way voicebot makes an HTTP request of its own (the model, VoIPBin, tools, context, records).

libcurl (through pycurl) frames, pools connections, speaks TLS, decodes and
goes through proxies, in C: a turn's requests cost about a third of the CPU
that urllib3 on http.client took (docs/benchmarks.md). This module adds what a
phone turn needs of every request:

- **one deadline**: the thread's (``voicebot.deadline.within``), over the
  lookup, connecting, sending and every read (``CURLOPT_TIMEOUT_MS``, and the
  transfer loop here), so a server that trickles its answer cannot hold a
  turn; a ``Cutoff`` can also be cancelled from another thread;
- **bounded**: every body has a cap, counted after decoding (a small gzip
  bomb is inflated no further than the cap), and past it the request fails;
- **never twice**: the body of a request goes through a read callback that
  cannot rewind, so libcurl never sends it again by itself (it would, on a
  kept-alive connection that closed as the request went out); a request is
  tried once more only when nothing of it can have reached the server, or
  when its method is idempotent; never after a timeout. ``EgressError.sent``
  tells the caller whether any of it may have reached the server;
- **clean reuse**: libcurl keeps a connection only once its answer was read
  whole and framed without doubt; one whose body was left unread is closed,
  and a redirect is an answer, never followed.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator, Mapping
from urllib.parse import urlsplit

import certifi
import pycurl

from ..deadline import in_effect
from .addresses import AddressPolicy
from .cutoff import Cutoff
from .errors import AddressRefused, BodyTooLarge, EgressError, EgressTimeout
from .origins import Origins

# Without a deadline in effect (a CLI command), a request still ends.
NO_DEADLINE_SECONDS = 120.0
CONNECT_SECONDS = 2.0
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS"})
# Where the system keeps its trusted certificates (beside certifi's bundle), when the environment names none.
SYSTEM_CA_DIR = "/etc/ssl/certs"

# CURLOPT_SUPPRESS_CONNECT_HEADERS (libcurl 7.54), which pycurl does not name.
SUPPRESS_CONNECT_HEADERS = getattr(pycurl, "SUPPRESS_CONNECT_HEADERS", 265)

# libcurl's failures before any byte of the request can have left: trying again cannot do it twice.
_NOT_SENT = frozenset({pycurl.E_COULDNT_RESOLVE_PROXY, pycurl.E_COULDNT_RESOLVE_HOST, pycurl.E_COULDNT_CONNECT,
                       pycurl.E_SSL_CONNECT_ERROR, pycurl.E_PEER_FAILED_VERIFICATION, pycurl.E_SSL_CERTPROBLEM,
                       pycurl.E_SSL_CACERT_BADFILE, pycurl.E_SSL_CIPHER, pycurl.E_SSL_ISSUER_ERROR,
                       getattr(pycurl, "E_PROXY", 97), pycurl.E_URL_MALFORMAT, pycurl.E_UNSUPPORTED_PROTOCOL})
_TLS = frozenset({pycurl.E_SSL_CONNECT_ERROR, pycurl.E_PEER_FAILED_VERIFICATION, pycurl.E_SSL_CERTPROBLEM,
                  pycurl.E_SSL_CACERT_BADFILE, pycurl.E_SSL_CIPHER, pycurl.E_SSL_ISSUER_ERROR})


class Headers(Mapping[str, str]):
    """An answer's header fields, names case-insensitive; a repeated field's values joined with ', ' (as RFC
    9110 allows for list fields), each kept apart in ``get_all``. Read from the header block's lines when
    first asked (most answers are asked only for their status and body)."""

    __slots__ = ("_block", "_parsed")

    def __init__(self, block: list[bytes] | None = None) -> None:
        self._block = block or []
        self._parsed: dict[str, list[str]] | None = None

    @property
    def _fields(self) -> dict[str, list[str]]:
        if self._parsed is None:
            self._parsed = {}
            for raw in self._block:
                name, _, value = raw.decode("latin-1").partition(":")
                self._parsed.setdefault(name.strip().lower(), []).append(value.strip())
        return self._parsed

    def __getitem__(self, name: str) -> str:
        return ", ".join(self._fields[name.lower()])

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._fields

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def get_all(self, name: str) -> list[str]:
        return list(self._fields.get(name.lower(), ()))


class Response:
    """An answer: its status, its headers (case-insensitive), and its body, read whole within its cap.

    The body is decoded (libcurl undoes a gzip, deflate, br or zstd coding); ``content-encoding`` stays in
    the headers as the server sent it."""

    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def redirect(self) -> bool:
        return 300 <= self.status < 400

    @property
    def encoded(self) -> str:
        """A content coding the server applied ('' for none)."""
        coding = str(self.headers.get("content-encoding", "")).strip().lower()
        return "" if coding in ("", "identity") else coding

    def json(self) -> Any:
        return json.loads(self.body)


class _Body:
    """The request's body for libcurl's read callback, once: there is no rewinding it (no seek callback), so
    a body that may have reached the server is never sent again by libcurl itself."""

    __slots__ = ("data", "offset")

    def __init__(self, data: bytes) -> None:
        self.data, self.offset = data, 0

    def read(self, size: int) -> bytes:
        piece = self.data[self.offset:self.offset + size]
        self.offset += len(piece)
        return piece


class _Transfer:
    """One request on one of the client's handles: libcurl's callbacks fill it, ``step`` drives it."""

    __slots__ = ("curl", "multi", "cutoff", "limit", "pieces", "received", "too_large", "status", "block",
                 "headed", "done", "code", "message", "doubtful", "lines")

    def __init__(self, curl: pycurl.Curl, multi: pycurl.CurlMulti | None, cutoff: Cutoff, limit: int) -> None:
        self.curl, self.multi, self.cutoff, self.limit = curl, multi, cutoff, limit
        self.pieces: list[bytes] = []
        self.received = 0
        self.too_large = False
        self.status = 0
        self.block: list[bytes] = []  # the final answer's header lines (no status line, no blank line)
        self.headed = False  # the final answer's header block is whole
        self.done = False
        self.code = 0
        self.message = ""
        self.doubtful = False  # framed two ways: its connection is not used again
        self.lines: list[bytes] = []

    def write(self, data: bytes) -> int | None:
        self.received += len(data)
        if self.received > self.limit:
            self.too_large = True
            return 0  # libcurl stops reading (a write error): nothing past the cap is inflated or kept
        self.pieces.append(data)
        return None

    def head(self) -> bool:
        """Whether the final answer's header block has come (libcurl hands its lines to ``lines``, which is
        its header callback: no Python call per line); its status and header lines once it has."""
        lines = self.lines
        if self.headed or not lines:
            return self.headed
        starts = [n for n, line in enumerate(lines) if line.startswith(b"HTTP/")]
        if not starts:
            return False
        start = starts[-1]  # the final answer's, after any 1xx answer's block
        end = next((n for n in range(start + 1, len(lines)) if lines[n] in (b"\r\n", b"\n")), None)
        parts = lines[start].split(None, 2)
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        if end is None or status < 200:
            return False
        self.status, self.headed = status, True
        self.block = lines[start + 1:end]  # what follows it is a chunked body's trailer
        # Both Transfer-Encoding and Content-Length: read as chunked (libcurl does), and the connection
        # closed after it, as RFC 9112 says (libcurl would keep it).
        fields = b"".join(self.block).lower()
        self.doubtful = b"transfer-encoding:" in fields and b"content-length:" in fields
        return True

    def step(self) -> None:
        """Let libcurl do what it can now without waiting (the callbacks fill the transfer)."""
        assert self.multi is not None
        while True:
            code, running = self.multi.perform()
            if code != pycurl.E_CALL_MULTI_PERFORM:
                break
        if not running:
            _, _, failed = self.multi.info_read()
            self.done = True
            if failed:
                self.code, self.message = failed[0][1], failed[0][2]

    def wait(self) -> None:
        """Wait for the sockets, within the cutoff (a cancellable one is looked at again soon)."""
        wait = self.cutoff.wait_slice()
        if wait > 0 and self.multi is not None:
            self.multi.select(wait)

    @property
    def sent(self) -> bool:
        """Whether any of the request may have reached the server."""
        return self.code not in _NOT_SENT and (self.curl.getinfo(pycurl.REQUEST_SIZE) > 0
                                               or self.curl.getinfo(pycurl.PRETRANSFER_TIME) > 0)


class Stream(Response):
    """An answer whose body is read as it arrives (``pieces``), within the same cap and deadline."""

    __slots__ = ("_transfer", "_fail", "whole")

    def __init__(self, transfer: _Transfer, fail: Any) -> None:
        super().__init__(transfer.status, Headers(transfer.block), b"")
        self._transfer, self._fail = transfer, fail
        self.whole = False

    def pieces(self) -> Iterator[bytes]:
        """The body's bytes as they come, one read at a time."""
        transfer = self._transfer
        while True:
            if transfer.pieces:
                piece = b"".join(transfer.pieces)
                transfer.pieces.clear()
                yield piece
                continue
            if transfer.done:
                if transfer.too_large:
                    raise BodyTooLarge(f"the answer is larger than {transfer.limit} bytes")
                if transfer.code:
                    self._fail(transfer)
                self.whole = True
                return
            if transfer.cutoff.expired:
                raise EgressTimeout("the answer did not come whole in time")
            transfer.step()
            if not transfer.pieces and not transfer.done:
                transfer.wait()

    def read(self) -> bytes:
        """The rest of the body, whole (an error answer read for its message)."""
        return b"".join(self.pieces())


def trust_store() -> tuple[str, str]:
    """The CA file and directory a request trusts: SSL_CERT_FILE (else certifi's bundle), and SSL_CERT_DIR
    (else the system's certificates), as Python's own TLS reads them."""
    ca_dir = os.environ.get("SSL_CERT_DIR") or (SYSTEM_CA_DIR if os.path.isdir(SYSTEM_CA_DIR) else "")
    return os.environ.get("SSL_CERT_FILE") or certifi.where(), ca_dir


class HTTP:
    """Requests from one part of voicebot, on kept-alive connections shared by a worker's threads.

    ``policy`` refuses addresses (the operator's endpoints: no loopback, no
    private networks; see ``AddressPolicy``) and turns proxies off for them;
    ``headers`` go with every request. Safe to share between threads (each
    request takes a libcurl handle of its own from the client's free list,
    with the connections that handle keeps alive); made in the app factory,
    closed with the app.
    """

    def __init__(self, *, policy: AddressPolicy | None = None, proxies: bool = True, pool_size: int = 16,
                 headers: Mapping[str, str] | None = None) -> None:
        self.policy = policy
        self.headers = dict(headers or {})
        self._unsafe_headers = not _safe_headers(self.headers)  # refused as each request is made
        self._fixed = [f"{name}: {value}" for name, value in self.headers.items()]
        self._origins = Origins(policy=policy, proxies=proxies)
        self._pool_size = pool_size
        self._stepped: list[tuple[pycurl.Curl, pycurl.CurlMulti | None]] = []
        self._whole_idle: list[tuple[pycurl.Curl, pycurl.CurlMulti | None]] = []
        self._lock = threading.Lock()
        self._closed = False
        self._urls: dict[str, tuple[str, str, int]] = {}
        self._ca_file, self._ca_dir = trust_store()

    def cutoff(self, seconds: float | None = None) -> Cutoff:
        """A deadline for one request: ``seconds`` from now, or the thread's if that ends sooner (without
        either, NO_DEADLINE_SECONDS). Made in one thread, it can be passed to a request made in another
        and cancelled from the first."""
        return self._cutoff(seconds, cancellable=True)

    def _cutoff(self, seconds: float | None, *, cancellable: bool = False) -> Cutoff:
        deadline = in_effect()
        at = time.monotonic() + (NO_DEADLINE_SECONDS if seconds is None else seconds)
        return Cutoff(min(at, deadline.at) if deadline is not None else at, cancellable=cancellable)

    def request(self, method: str, url: str, *, body: bytes | None = None, headers: Mapping[str, str] | None = None,
                limit: int, cutoff: Cutoff | None = None) -> Response:
        """One request and its answer, read whole: at most ``limit`` bytes of body (decoded), or BodyTooLarge.

        Raises EgressTimeout, AddressRefused, BodyTooLarge or EgressError: never libcurl's.
        """
        if cutoff is not None and cutoff.cancellable:  # another thread may cancel it: driven here, step by step
            with self.stream(method, url, body=body, headers=headers, limit=limit, cutoff=cutoff) as answer:
                return Response(answer.status, answer.headers, answer.read())
        cutoff = cutoff or self._cutoff(None)
        try:
            try:
                transfer = self._whole(method, url, body, headers, limit, cutoff)
            except EgressError as exc:
                if not _may_try_again(exc, method):
                    raise
                transfer = self._whole(method, url, body, headers, limit, cutoff)
            return Response(transfer.status, Headers(transfer.block), b"".join(transfer.pieces))
        finally:
            cutoff.finish()

    @contextmanager
    def stream(self, method: str, url: str, *, body: bytes | None = None, headers: Mapping[str, str] | None = None,
               limit: int, cutoff: Cutoff | None = None) -> Iterator[Stream]:
        """One request whose answer is read as it arrives, within the ``with``: a body left unread closes the
        connection rather than keep it."""
        cutoff = cutoff or self._cutoff(None)
        try:
            try:
                transfer = self._start(method, url, body, headers, limit, cutoff)
            except EgressError as exc:
                if not _may_try_again(exc, method):
                    raise
                transfer = self._start(method, url, body, headers, limit, cutoff)  # once: it cannot be done twice
            stream = Stream(transfer, self._fail)
            try:
                yield stream
            finally:
                self._give_back(transfer)
        finally:
            cutoff.finish()

    def _whole(self, method: str, url: str, body: bytes | None, headers: Mapping[str, str] | None, limit: int,
               cutoff: Cutoff) -> _Transfer:
        """The request and its whole answer in one call into libcurl (which keeps the deadline itself)."""
        transfer = self._prepare(method, url, body, headers, limit, cutoff, stepped=False)
        try:
            try:
                transfer.curl.perform()
            except pycurl.error as exc:
                transfer.code = int(exc.args[0])
            transfer.done = True
            if transfer.code or transfer.too_large or not transfer.head():
                self._fail(transfer)
        finally:
            self._give_back(transfer)
        return transfer

    def _start(self, method: str, url: str, body: bytes | None, headers: Mapping[str, str] | None, limit: int,
               cutoff: Cutoff) -> _Transfer:
        """The request sent and its answer's headers read (the body follows in ``Stream.pieces``)."""
        transfer = self._prepare(method, url, body, headers, limit, cutoff, stepped=True)
        assert transfer.multi is not None
        transfer.multi.add_handle(transfer.curl)
        try:
            while True:
                if cutoff.expired:
                    raise EgressTimeout("it did not answer in time", sent=transfer.sent)
                transfer.step()
                if transfer.head() or transfer.done:
                    break
                transfer.wait()
            if not transfer.head():
                self._fail(transfer)
        except BaseException:
            self._give_back(transfer)
            raise
        return transfer

    def _prepare(self, method: str, url: str, body: bytes | None, headers: Mapping[str, str] | None, limit: int,
                 cutoff: Cutoff, *, stepped: bool) -> _Transfer:
        """A handle set up for the request (``stepped``: one driven through its multi handle here)."""
        scheme, host, port = self._split(url)
        if self._unsafe_headers or headers and not _safe_headers(headers):
            # libcurl sends a header as it is given: a line break would make a header (or a request) of its own.
            raise ValueError("a header name or value has a line break or control character in it")
        if cutoff.expired:
            raise EgressTimeout("no time was left to send it", sent=False)
        route = self._origins.route(scheme, host, port, cutoff)
        left = cutoff.left()
        if left <= 0:
            raise EgressTimeout("no time was left to send it", sent=False)
        curl, multi = self._take(stepped)
        transfer = _Transfer(curl, multi, cutoff, limit)  # a handle comes fresh, or reset as it was given back
        setopt = curl.setopt
        setopt(pycurl.URL, url)
        setopt(pycurl.NOSIGNAL, 1)
        setopt(pycurl.PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS)
        setopt(pycurl.TIMEOUT_MS, max(1, int(left * 1000)))
        setopt(pycurl.CONNECTTIMEOUT_MS, max(1, int(min(CONNECT_SECONDS, left) * 1000)))
        # An answer gzipped unasked is still read (and bounded after inflating); none is asked for.
        setopt(pycurl.ACCEPT_ENCODING, "identity")
        setopt(pycurl.PROXY, route.proxy)  # '' turns off libcurl's own reading of the environment
        if route.proxy:
            setopt(SUPPRESS_CONNECT_HEADERS, 1)  # the proxy's answer to CONNECT is not the server's
        if route.resolve:
            setopt(pycurl.RESOLVE, route.resolve)
        if scheme == "https":
            setopt(pycurl.CAINFO, self._ca_file)
            if self._ca_dir:
                setopt(pycurl.CAPATH, self._ca_dir)
        sent_headers = self._fixed + [f"{name}: {value}" for name, value in (headers or {}).items()]
        sent_headers.append("Expect:")  # no 100-continue round trip before a large body
        setopt(pycurl.HTTPHEADER, sent_headers)
        if method == "HEAD":
            setopt(pycurl.NOBODY, 1)
        elif body is not None or method == "POST":
            setopt(pycurl.POST, 1)
            data = body or b""
            setopt(pycurl.POSTFIELDSIZE_LARGE, len(data))
            setopt(pycurl.READFUNCTION, _Body(data).read)
            if method != "POST":
                setopt(pycurl.CUSTOMREQUEST, method)
        elif method != "GET":
            setopt(pycurl.CUSTOMREQUEST, method)
        if limit > 0:
            setopt(pycurl.MAXFILESIZE_LARGE, limit)  # a Content-Length past the cap fails before the body
        setopt(pycurl.WRITEFUNCTION, transfer.write)
        setopt(pycurl.HEADERFUNCTION, transfer.lines.append)
        return transfer

    def _fail(self, transfer: _Transfer) -> None:
        """A transfer libcurl ended with an error (or with no HTTP answer), in voicebot's words."""
        code, sent = transfer.code, transfer.sent
        if transfer.too_large or code == pycurl.E_FILESIZE_EXCEEDED:
            raise BodyTooLarge(f"the answer is larger than {transfer.limit} bytes")
        if code == pycurl.E_OPERATION_TIMEDOUT or transfer.cutoff.expired:
            raise EgressTimeout("it did not answer whole in time", sent=sent)
        if code in (pycurl.E_COULDNT_CONNECT, pycurl.E_COULDNT_RESOLVE_HOST, pycurl.E_COULDNT_RESOLVE_PROXY) \
                or code in _TLS:
            scheme, host, port = self._split(str(transfer.curl.getinfo(pycurl.EFFECTIVE_URL)))
            self._origins.forget(scheme, host, port)
            what = "no TLS with it" if code in _TLS else "it could not be reached"
            raise EgressError(f"{what} (curl error {code})", sent=False)
        if code == pycurl.E_BAD_CONTENT_ENCODING:
            raise EgressError("the answer's content coding is corrupt")
        if code == pycurl.E_SEND_FAIL_REWIND:
            raise EgressError("the connection closed as the request went out; it is not sent again")
        if not code:
            raise EgressError("the answer was not HTTP")
        raise EgressError(f"the connection failed (curl error {code})", sent=sent)

    def _take(self, stepped: bool) -> tuple[pycurl.Curl, pycurl.CurlMulti | None]:
        """A handle from the free list (the one used last: the least likely to have been closed meanwhile).
        A stepped one comes with the multi handle that keeps its connections; a whole one keeps its own."""
        idle = self._stepped if stepped else self._whole_idle
        with self._lock:
            if self._closed:
                raise EgressError("the client is closed", sent=False)
            if idle:
                return idle.pop()
        return pycurl.Curl(), pycurl.CurlMulti() if stepped else None

    def _give_back(self, transfer: _Transfer) -> None:
        """Back to the free list with its connections; a transfer left unfinished closes its connection
        (libcurl does not keep one whose answer was not read whole), and one framed in doubt closes the
        handle's connections with it."""
        curl, multi = transfer.curl, transfer.multi
        if multi is not None:
            try:
                multi.remove_handle(curl)
            except pycurl.error:
                pass
        # Callbacks hold the transfer, and the transfer the handle: let go of them before the handle waits idle.
        curl.reset()
        idle = self._stepped if multi is not None else self._whole_idle
        with self._lock:
            if not self._closed and len(idle) < self._pool_size and not transfer.doubtful:
                idle.append((curl, multi))
                return
        curl.close()
        if multi is not None:
            multi.close()

    def _split(self, url: str) -> tuple[str, str, int]:
        known = self._urls.get(url)
        if known is not None:
            return known
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {parts.scheme}://{parts.hostname or ''}")
        if _unsafe(url):
            raise ValueError("the URL has a line break or control character in it")
        split = (parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
        if len(self._urls) < 1024:  # the few fixed URLs a client asks again and again; not every say's path
            self._urls[url] = split
        return split

    def close(self) -> None:
        """Let go of the connections (a worker stopping); a request still running fails as it comes back."""
        with self._lock:
            self._closed = True
            idle, self._stepped, self._whole_idle = self._stepped + self._whole_idle, [], []
        for curl, multi in idle:
            curl.close()
            if multi is not None:
                multi.close()
        self._origins.close()


def _may_try_again(exc: EgressError, method: str) -> bool:
    """Once more only when it cannot be done twice: nothing of it was sent, or its method is idempotent;
    never after the deadline, nor when the address is refused."""
    if isinstance(exc, (EgressTimeout, AddressRefused)):
        return False
    return not exc.sent or method in IDEMPOTENT


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_BUT_TAB = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _unsafe(text: str) -> bool:
    return _CONTROL.search(text) is not None


def _safe_headers(headers: Mapping[str, str]) -> bool:
    return all(name and ":" not in name and not _CONTROL.search(name) and not _CONTROL_BUT_TAB.search(str(value))
               for name, value in headers.items())

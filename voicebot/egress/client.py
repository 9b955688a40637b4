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

import os
import re
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator, Mapping
from urllib.parse import urlsplit

import certifi
import pycurl

from ..deadline import in_effect
from .addresses import AddressPolicy
from .cutoff import Cutoff
from .errors import AddressRefused, BodyTooLarge, EgressError, EgressTimeout
from .answers import Headers, Response
from .loop import Loop
from .origins import Origins
from .transfer import TLS_FAILURES, Body, Stream, Transfer

# Without a deadline in effect (a CLI command), a request still ends.
NO_DEADLINE_SECONDS = 120.0
CONNECT_SECONDS = 2.0
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS"})
# Where the system keeps its trusted certificates (beside certifi's bundle), when the environment names none.
SYSTEM_CA_DIR = "/etc/ssl/certs"

# CURLOPT_SUPPRESS_CONNECT_HEADERS (libcurl 7.54), which pycurl does not name.
SUPPRESS_CONNECT_HEADERS = getattr(pycurl, "SUPPRESS_CONNECT_HEADERS", 265)


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
        self._stepped: list[tuple[pycurl.Curl, Loop | None]] = []
        self._whole_idle: list[tuple[pycurl.Curl, Loop | None]] = []
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
            transfer = _at_most_twice(lambda: self._whole(method, url, body, headers, limit, cutoff), method)
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
            transfer = _at_most_twice(lambda: self._start(method, url, body, headers, limit, cutoff), method)
            stream = Stream(transfer, self._fail)
            try:
                yield stream
            finally:
                self._give_back(transfer)
        finally:
            cutoff.finish()

    def _whole(self, method: str, url: str, body: bytes | None, headers: Mapping[str, str] | None, limit: int,
               cutoff: Cutoff) -> Transfer:
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
               cutoff: Cutoff) -> Transfer:
        """The request sent and its answer's headers read (the body follows in ``Stream.pieces``)."""
        transfer = self._prepare(method, url, body, headers, limit, cutoff, stepped=True)
        assert transfer.loop is not None
        transfer.loop.add(transfer.curl)
        try:
            while True:
                if cutoff.expired:
                    raise EgressTimeout("it did not answer in time", sent=transfer.sent)
                transfer.advance()
                if transfer.head() or transfer.done:
                    break
            if not transfer.head():
                self._fail(transfer)
        except BaseException:
            self._give_back(transfer)
            raise
        return transfer

    def _prepare(self, method: str, url: str, body: bytes | None, headers: Mapping[str, str] | None, limit: int,
                 cutoff: Cutoff, *, stepped: bool) -> Transfer:
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
        curl, loop = self._take(stepped)
        transfer = Transfer(curl, loop, cutoff, limit)  # a handle comes fresh, or reset as it was given back
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
            setopt(pycurl.READFUNCTION, Body(data).read)
            if method != "POST":
                setopt(pycurl.CUSTOMREQUEST, method)
        elif method != "GET":
            setopt(pycurl.CUSTOMREQUEST, method)
        if limit > 0:
            setopt(pycurl.MAXFILESIZE_LARGE, limit)  # a Content-Length past the cap fails before the body
        setopt(pycurl.WRITEFUNCTION, transfer.write)
        setopt(pycurl.HEADERFUNCTION, transfer.lines.append)
        return transfer

    def _fail(self, transfer: Transfer) -> None:
        """A transfer libcurl ended with an error (or with no HTTP answer), in voicebot's words."""
        code, sent = transfer.code, transfer.sent
        if transfer.too_large or code == pycurl.E_FILESIZE_EXCEEDED:
            raise BodyTooLarge(f"the answer is larger than {transfer.limit} bytes")
        if code == pycurl.E_OPERATION_TIMEDOUT or transfer.cutoff.expired:
            raise EgressTimeout("it did not answer whole in time", sent=sent)
        if code in (pycurl.E_COULDNT_CONNECT, pycurl.E_COULDNT_RESOLVE_HOST, pycurl.E_COULDNT_RESOLVE_PROXY) \
                or code in TLS_FAILURES:
            scheme, host, port = self._split(str(transfer.curl.getinfo(pycurl.EFFECTIVE_URL)))
            self._origins.forget(scheme, host, port)
            what = "no TLS with it" if code in TLS_FAILURES else "it could not be reached"
            raise EgressError(f"{what} (curl error {code})", sent=False)
        if code == pycurl.E_BAD_CONTENT_ENCODING:
            raise EgressError("the answer's content coding is corrupt")
        if code == pycurl.E_SEND_FAIL_REWIND:
            raise EgressError("the connection closed as the request went out; it is not sent again")
        if not code:
            raise EgressError("the answer was not HTTP")
        raise EgressError(f"the connection failed (curl error {code})", sent=sent)

    def _take(self, stepped: bool) -> tuple[pycurl.Curl, Loop | None]:
        """A handle from the free list (the one used last: the least likely to have been closed meanwhile).
        A stepped one comes with the loop whose multi handle keeps its connections; a whole one keeps its own."""
        idle = self._stepped if stepped else self._whole_idle
        with self._lock:
            if self._closed:
                raise EgressError("the client is closed", sent=False)
            if idle:
                return idle.pop()
        return pycurl.Curl(), Loop() if stepped else None

    def _give_back(self, transfer: Transfer) -> None:
        """Back to the free list with its connections; a transfer left unfinished closes its connection
        (libcurl does not keep one whose answer was not read whole), and one framed in doubt closes the
        handle's connections with it."""
        curl, loop = transfer.curl, transfer.loop
        if loop is not None:
            loop.remove(curl)
        # Callbacks hold the transfer, and the transfer the handle: let go of them before the handle waits idle.
        curl.reset()
        idle = self._stepped if loop is not None else self._whole_idle
        with self._lock:
            if not self._closed and len(idle) < self._pool_size and not transfer.doubtful:
                idle.append((curl, loop))
                return
        curl.close()
        if loop is not None:
            loop.close()

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
        for curl, loop in idle:
            curl.close()
            if loop is not None:
                loop.close()
        self._origins.close()


def _at_most_twice(send: Callable[[], Transfer], method: str) -> Transfer:
    """``send``, and once more only when that cannot do it twice: nothing of it was sent, or its method is
    idempotent; never after the deadline, nor when the address is refused."""
    try:
        return send()
    except (EgressTimeout, AddressRefused):
        raise
    except EgressError as exc:
        if exc.sent and method not in IDEMPOTENT:
            raise
    return send()


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_BUT_TAB = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _unsafe(text: str) -> bool:
    return _CONTROL.search(text) is not None


def _safe_headers(headers: Mapping[str, str]) -> bool:
    return all(name and ":" not in name and not _CONTROL.search(name) and not _CONTROL_BUT_TAB.search(str(value))
               for name, value in headers.items())

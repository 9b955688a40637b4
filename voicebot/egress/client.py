"""``HTTP``: the one way voicebot makes an HTTP request of its own (the model, VoIPBin, tools, context, records).

urllib3 frames, pools, speaks TLS and proxies; this module adds what a phone
turn needs of every request:

- **one deadline**: the thread's (``voicebot.deadline.within``), over the
  lookup, connecting, sending and every read; past it the sockets are shut
  down (``cutoff``), so a server that trickles its answer cannot hold a turn;
- **bounded**: every body has a cap, the decoded size included (a small
  gzip bomb is read no further than the cap), and past it the request fails;
- **never twice**: a request is tried once more only when nothing of it can
  have reached the server (no connection could be made) or when its method
  is idempotent (GET, HEAD) and the connection failed; never after a
  timeout. ``EgressError.sent`` tells the caller whether any of it may have
  reached the server;
- **clean reuse**: a connection goes back to its pool only once its answer was
  read whole and framed without doubt (both ``Transfer-Encoding`` and
  ``Content-Length``: closed, as RFC 9112 says), and a redirect is an answer,
  never followed.
"""

from __future__ import annotations

import json
import ssl
import time
from contextlib import contextmanager
from typing import Any, Iterator, Mapping
from urllib.parse import urlsplit

import certifi
import urllib3
from urllib3.exceptions import DecodeError, HTTPError, NewConnectionError, ProxyError, SSLError

from ..deadline import in_effect
from .addresses import AddressPolicy
from .cutoff import Cutoff, Watchdog
from .errors import AddressRefused, BodyTooLarge, EgressError, EgressTimeout
from .origins import NotSent, Origins, using

# Without a deadline in effect (a CLI command), a request still ends.
NO_DEADLINE_SECONDS = 120.0
CONNECT_SECONDS = 2.0
READ_PIECE = 65536
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS"})


class Response:
    """An answer: its status, its headers (case-insensitive), and its body, read whole within its cap."""

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


class Stream(Response):
    """An answer whose body is read as it arrives (``pieces``), within the same cap and deadline."""

    __slots__ = ("_raw", "_limit", "_cutoff", "whole")

    def __init__(self, raw: urllib3.BaseHTTPResponse, limit: int, cutoff: Cutoff) -> None:
        super().__init__(raw.status, raw.headers, b"")
        self._raw, self._limit, self._cutoff = raw, limit, cutoff
        self.whole = False

    def pieces(self) -> Iterator[bytes]:
        """The body's bytes as they come, one read at a time."""
        total = 0
        while True:
            piece = _reading(self._cutoff, lambda: self._raw.read1(READ_PIECE))
            if not piece:
                self.whole = True
                return
            total += len(piece)
            if total > self._limit:
                raise BodyTooLarge(f"the answer is larger than {self._limit} bytes")
            yield piece

    def read(self) -> bytes:
        """The rest of the body, whole (an error answer read for its message)."""
        return b"".join(self.pieces())


def default_tls() -> ssl.SSLContext:
    """The system's trust store (which SSL_CERT_FILE overrides), and certifi's bundle beside it."""
    context = ssl.create_default_context()
    context.load_verify_locations(cafile=certifi.where())
    return context


class HTTP:
    """Requests from one part of voicebot, on kept-alive connections shared by a worker's threads.

    ``policy`` refuses addresses (the operator's endpoints: no loopback, no
    private networks; see ``AddressPolicy``) and turns proxies off for them;
    ``headers`` go with every request. Safe to share between threads; made in
    the app factory, closed with the app.
    """

    def __init__(self, *, policy: AddressPolicy | None = None, proxies: bool = True,
                 tls: ssl.SSLContext | None = None, pool_size: int = 16,
                 headers: Mapping[str, str] | None = None) -> None:
        self.policy = policy
        self.headers = dict(headers or {})
        self._origins = Origins(policy=policy, proxies=proxies, tls=tls or default_tls(), pool_size=pool_size)
        self._watchdog = Watchdog()
        self._urls: dict[str, tuple[str, str, int, str]] = {}

    def cutoff(self, seconds: float | None = None) -> Cutoff:
        """A deadline for one request: ``seconds`` from now, or the thread's if that ends sooner (without
        either, NO_DEADLINE_SECONDS). Made in one thread, it can be passed to a request made in another
        and cancelled from the first."""
        deadline = in_effect()
        at = time.monotonic() + (NO_DEADLINE_SECONDS if seconds is None else seconds)
        return Cutoff(min(at, deadline.at) if deadline is not None else at)

    def request(self, method: str, url: str, *, body: bytes | None = None, headers: Mapping[str, str] | None = None,
                limit: int, cutoff: Cutoff | None = None) -> Response:
        """One request and its answer, read whole: at most ``limit`` bytes of body (decoded), or BodyTooLarge.

        Raises EgressTimeout, AddressRefused, BodyTooLarge or EgressError: never urllib3's or a socket's.
        """
        cutoff = cutoff or self.cutoff()
        try:
            try:
                raw = self._send(method, url, body, headers, cutoff)
            except (EgressTimeout, AddressRefused):
                raise
            except EgressError as exc:
                if exc.sent and method not in IDEMPOTENT:
                    raise
                raw = self._send(method, url, body, headers, cutoff)  # once more: it cannot be done twice
            try:
                data = _reading(cutoff, lambda: raw.read(limit + 1, decode_content=True))
                if len(data) > limit:
                    raise BodyTooLarge(f"the answer is larger than {limit} bytes")
                _release(raw, cutoff, whole=True)
            except BaseException:
                _release(raw, cutoff, whole=False)
                raise
            return Response(raw.status, raw.headers, data)
        finally:
            cutoff.finish()
            using(None)

    @contextmanager
    def stream(self, method: str, url: str, *, body: bytes | None = None, headers: Mapping[str, str] | None = None,
               limit: int, cutoff: Cutoff | None = None) -> Iterator[Stream]:
        """One request whose answer is read as it arrives, within the ``with``: a body left unread closes the
        connection rather than keep it."""
        cutoff = cutoff or self.cutoff()
        try:
            raw = self._send(method, url, body, headers, cutoff)
            stream = Stream(raw, limit, cutoff)
            try:
                yield stream
            finally:
                _release(raw, cutoff, whole=stream.whole)
        finally:
            cutoff.finish()
            using(None)

    def _send(self, method: str, url: str, body: bytes | None, headers: Mapping[str, str] | None,
              cutoff: Cutoff) -> urllib3.BaseHTTPResponse:
        scheme, host, port, target = self._split(url)
        left = cutoff.left()
        if left <= 0:
            raise EgressTimeout("no time was left to send it", sent=False)
        route = self._origins.route(scheme, host, port, cutoff)
        sent_headers = {"Host": route.host_header, **self.headers, **(headers or {})}
        self._watchdog.watch(cutoff)
        using(cutoff)
        timeout = urllib3.Timeout(connect=min(CONNECT_SECONDS, left), read=left)
        options: dict[str, Any] = {"body": body, "headers": sent_headers, "redirect": False, "retries": False,
                                   "preload_content": False, "release_conn": False, "timeout": timeout}
        try:
            if route.proxy is not None:
                raw = route.proxy.urlopen(method, url, **options)
            else:
                assert route.pool is not None
                raw = route.pool.urlopen(method, target, assert_same_host=False, **options)
        except NotSent:
            raise EgressTimeout("no time was left to send it", sent=False) from None
        except (NewConnectionError, ProxyError, SSLError) as exc:  # before a byte of the request left
            self._origins.forget(scheme, host, port)
            if cutoff.expired:
                raise EgressTimeout("no connection within the deadline", sent=False) from None
            what = "no TLS with it" if isinstance(exc, SSLError) else "it could not be reached"
            raise EgressError(f"{what} ({type(exc).__name__})", sent=False) from None
        except (HTTPError, OSError) as exc:
            if cutoff.expired:
                raise EgressTimeout("it did not answer in time") from None
            raise EgressError(f"the connection failed ({type(exc).__name__})") from None
        if "transfer-encoding" in raw.headers and "content-length" in raw.headers:
            # Framed two ways: read as chunked, and the connection is not used again (urllib3 puts it back
            # in its pool as the body ends, so it is marked to be opened afresh).
            connection = raw.connection
            if connection is not None:
                connection.doubtful = True  # type: ignore[attr-defined]
        return raw

    def _split(self, url: str) -> tuple[str, str, int, str]:
        known = self._urls.get(url)
        if known is not None:
            return known
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {parts.scheme}://{parts.hostname or ''}")
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        split = (parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80), target)
        if len(self._urls) < 1024:  # the few fixed URLs a client asks again and again; not every say's path
            self._urls[url] = split
        return split

    def close(self) -> None:
        """Cut off every request in flight (a worker stopping) and let go of the connections."""
        self._watchdog.stop()
        self._origins.close()


def _reading(cutoff: Cutoff, read: Any) -> bytes:
    """One read of an answer's body, its failures in voicebot's words."""
    try:
        data: bytes = read()
    except DecodeError:
        raise EgressError("the answer's content coding is corrupt") from None
    except (HTTPError, OSError, ValueError) as exc:  # cut off at the deadline, a broken or malformed body
        if cutoff.expired:
            raise EgressTimeout("the answer did not come whole in time") from None
        raise EgressError(f"the answer broke off ({type(exc).__name__})") from None
    if cutoff.cancelled:  # cut off: what came before the cut may look whole, and is not
        raise EgressTimeout("the answer did not come whole in time")
    return data


def _release(raw: urllib3.BaseHTTPResponse, cutoff: Cutoff, *, whole: bool) -> None:
    """Back to the pool only clean: read whole (urllib3 gave it back as the body ended); otherwise closed."""
    cutoff.finish()
    if not whole:
        raw.close()  # the connection goes with it
    raw.release_conn()

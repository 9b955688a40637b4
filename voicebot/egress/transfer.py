"""One request on one libcurl handle: its body handed out once, its answer filled in by libcurl's callbacks,
and the answer's body read as it arrives (``Stream``)."""

from __future__ import annotations

from typing import Callable, Iterator

import pycurl

from .answers import Headers, Response
from .cutoff import Cutoff
from .errors import BodyTooLarge, EgressTimeout
from .loop import Loop

# libcurl's failures in making a connection (or a TLS session) at all.
TLS_FAILURES = frozenset({pycurl.E_SSL_CONNECT_ERROR, pycurl.E_PEER_FAILED_VERIFICATION, pycurl.E_SSL_CERTPROBLEM,
                          pycurl.E_SSL_CACERT_BADFILE, pycurl.E_SSL_CIPHER, pycurl.E_SSL_ISSUER_ERROR})
# Its failures before any byte of the request can have left: trying again cannot do it twice.
NOT_SENT = TLS_FAILURES | {pycurl.E_COULDNT_RESOLVE_PROXY, pycurl.E_COULDNT_RESOLVE_HOST, pycurl.E_COULDNT_CONNECT,
                           getattr(pycurl, "E_PROXY", 97), pycurl.E_URL_MALFORMAT, pycurl.E_UNSUPPORTED_PROTOCOL}


class Body:
    """The request's body for libcurl's read callback, once: there is no rewinding it (no seek callback), so
    a body that may have reached the server is never sent again by libcurl itself."""

    __slots__ = ("data", "offset")

    def __init__(self, data: bytes) -> None:
        self.data, self.offset = data, 0

    def read(self, size: int) -> bytes:
        piece = self.data[self.offset:self.offset + size]
        self.offset += len(piece)
        return piece


class Transfer:
    """One request on one of the client's handles: libcurl's callbacks fill it, ``advance`` drives it (a
    stepped one, on its ``loop``)."""

    __slots__ = ("curl", "loop", "cutoff", "limit", "pieces", "received", "too_large", "status", "block",
                 "headed", "done", "code", "doubtful", "lines")

    def __init__(self, curl: pycurl.Curl, loop: Loop | None, cutoff: Cutoff, limit: int) -> None:
        self.curl, self.loop, self.cutoff, self.limit = curl, loop, cutoff, limit
        self.pieces: list[bytes] = []
        self.received = 0
        self.too_large = False
        self.status = 0
        self.block: list[bytes] = []  # the final answer's header lines (no status line, no blank line)
        self.headed = False  # the final answer's header block is whole
        self.done = False
        self.code = 0
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

    def advance(self) -> None:
        """Wait (within the cutoff; a cancellable one is looked at again soon) for what libcurl waits for, and
        let it act: the callbacks fill the transfer."""
        assert self.loop is not None
        self.loop.drive(self.cutoff.wait_slice())
        if self.loop.result is not None:
            self.done, self.code = True, self.loop.result

    @property
    def sent(self) -> bool:
        """Whether any of the request may have reached the server."""
        if self.code in NOT_SENT:
            return False
        return bool(self.curl.getinfo(pycurl.REQUEST_SIZE) > 0 or self.curl.getinfo(pycurl.PRETRANSFER_TIME) > 0)


class Stream(Response):
    """An answer whose body is read as it arrives (``pieces``), within the same cap and deadline."""

    __slots__ = ("_transfer", "_fail")

    def __init__(self, transfer: Transfer, fail: Callable[[Transfer], None]) -> None:
        super().__init__(transfer.status, Headers(transfer.block), b"")
        self._transfer, self._fail = transfer, fail

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
                return
            if transfer.cutoff.expired:
                raise EgressTimeout("the answer did not come whole in time")
            transfer.advance()

    def read(self) -> bytes:
        """The rest of the body, whole (an error answer read for its message)."""
        return b"".join(self.pieces())

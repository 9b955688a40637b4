"""A keep-alive HTTP/1.1 client connection on asyncio streams, for the simulator's hundreds of calls."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit


class HTTPConnection:
    """One keep-alive HTTP/1.1 connection on asyncio streams.

    The simulator runs hundreds of calls from one process; a thread and a
    requests.Session per call would spend more CPU, and add more scheduling
    delay to every measured latency, than the server under test.
    """

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http":
            raise ValueError(f"the simulator speaks plain http to loopback or a private network: {url}")
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.base_url = f"http://{self.host}:{self.port}{self.prefix}"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        reader = self.reader
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.writer.write((f"POST {self.prefix}{path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                           f"Content-Length: {len(body)}\r\n{head}\r\n").encode() + body)
        try:
            status_line = await reader.readline()
            if not status_line:
                raise ConnectionError("the server closed the connection")
            status = int(status_line.split()[1])
            answer_headers = {}
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b"\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                answer_headers[name.strip().lower()] = value.strip()
            data = await reader.readexactly(int(answer_headers.get("content-length", 0)))
        except BaseException:
            self.close()
            raise
        if answer_headers.get("connection", "").lower() == "close":
            self.close()
        return status, answer_headers, data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

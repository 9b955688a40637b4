"""What a request gets back: an answer's status, headers and body (``Response``), its header fields."""

from __future__ import annotations

import json
from typing import Any, Iterator, Mapping


class Headers(Mapping[str, str]):
    """An answer's header fields, names case-insensitive; a repeated field's values joined with ', ' (as RFC
    9110 allows for list fields). Read from the header block's lines when
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

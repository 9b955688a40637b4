"""Prompt caching as the Messages API bills it: cache breakpoints, writes, reads and their lifetime."""

from __future__ import annotations

import json
import threading
from typing import Any


class PromptCache:
    """The API's prompt caching, as its documentation states the rules, for ``usage``.

    The prompt is read in order (tools, system, messages), block by block; a
    ``cache_control`` block ends a cacheable prefix. A request reads the
    longest prefix it shares with one cached in the last 5 minutes (checked at
    block boundaries up to 20 blocks before each of its breakpoints) and
    writes each breakpoint's prefix of at least ``min_tokens``. A token here is
    a word, which is all a benchmark of the billing needs.
    """

    LOOKBACK = 20

    def __init__(self, min_tokens: int = 1024, ttl: float = 300.0) -> None:
        self.min_tokens = min_tokens
        self.ttl = ttl
        self.entries: dict[str, float] = {}  # prefix digest -> expiry
        self._lock = threading.Lock()

    def usage(self, body: dict[str, Any], now: float) -> dict[str, int]:
        import hashlib

        blocks = _prompt_blocks(body)
        digests, totals, marks = [], [], []
        digest, total = hashlib.sha256(), 0
        for index, (text, marked) in enumerate(blocks):
            digest.update(text.encode("utf-8", "surrogatepass") + b"\x00")
            total += len(text.split())
            digests.append(digest.copy().hexdigest())
            totals.append(total)
            if marked:
                marks.append(index)
        read = written = 0
        with self._lock:
            self.entries = {k: t for k, t in self.entries.items() if t > now}
            hit = -1
            for mark in marks:
                for index in range(mark, max(-1, mark - self.LOOKBACK), -1):
                    if digests[index] in self.entries and index > hit:
                        hit = index
                        break
            if hit >= 0:
                read = totals[hit]
                self.entries[digests[hit]] = now + self.ttl
            for mark in marks:
                if mark > hit and totals[mark] >= self.min_tokens:
                    self.entries[digests[mark]] = now + self.ttl
                    written = totals[mark] - read
        return {"input_tokens": total - read - written, "cache_creation_input_tokens": written,
                "cache_read_input_tokens": read}


def _prompt_blocks(body: dict[str, Any]) -> list[tuple[str, bool]]:
    """The prompt in the order the API caches it, as (text, ends a breakpoint)."""
    blocks: list[tuple[str, bool]] = []
    for tool in body.get("tools") or []:
        blocks.append((json.dumps({k: v for k, v in tool.items() if k != "cache_control"}, sort_keys=True),
                       "cache_control" in tool))
    system = body.get("system")
    if isinstance(system, str):
        blocks.append((system, False))
    for block in system if isinstance(system, list) else []:
        blocks.append((block.get("text", ""), "cache_control" in block))
    for message in body["messages"]:
        content = message["content"]
        if isinstance(content, str):  # the API reads a string as one text block
            content = [{"type": "text", "text": content}]
        for block in content:
            text = json.dumps({k: v for k, v in block.items() if k != "cache_control"}, sort_keys=True)
            blocks.append((f"{message['role']}: {text}", "cache_control" in block))
    return blocks

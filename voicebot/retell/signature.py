"""Retell's webhook signature, checked as retell-sdk's ``Retell.verify`` does: ``x-retell-signature`` is
``v=<milliseconds>,d=<hex HMAC-SHA256 of the raw body followed by those milliseconds>``, keyed with the
account's API key, and good for five minutes either side of now.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from typing import Callable

HEADER = "x-retell-signature"
TOLERANCE_MS = 5 * 60 * 1000
_SIGNATURE = re.compile(r"v=(\d{1,16}),d=([0-9a-f]{64})")


def sign(body: bytes, api_key: str, now_ms: int | None = None) -> str:
    """The header Retell sends for ``body`` (for the fakes and the simulator)."""
    stamp = int(time.time() * 1000) if now_ms is None else now_ms
    digest = hmac.new(api_key.encode(), body + str(stamp).encode(), hashlib.sha256).hexdigest()
    return f"v={stamp},d={digest}"


def verify(body: bytes, api_key: str, header: str, now: Callable[[], float] = time.time) -> bool:
    match = _SIGNATURE.fullmatch(header.strip())
    if match is None or not api_key:
        return False
    stamp = int(match.group(1))
    if abs(int(now() * 1000) - stamp) > TOLERANCE_MS:
        return False
    expected = hmac.new(api_key.encode(), body + match.group(1).encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, match.group(2))

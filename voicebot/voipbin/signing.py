"""VoIPBin's webhook signature: ``X-VoIPBIN-Signature: sha256=<hex HMAC-SHA256 of the raw body>``."""

from __future__ import annotations

import hashlib
import hmac

HEADER = "X-VoIPBIN-Signature"
_SCHEME = "sha256="


def sign(body: bytes, secret: str) -> str:
    """The header value VoIPBin sends with ``body``."""
    return _SCHEME + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(body: bytes, header: str | None, secret: str) -> bool:
    """True when ``header`` is the signature of ``body``; compared in constant time."""
    if not header or not header.startswith(_SCHEME):
        return False
    return hmac.compare_digest(header.encode(), sign(body, secret).encode())

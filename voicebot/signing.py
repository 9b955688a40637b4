"""The one HMAC signer: ``sha256=<hex HMAC-SHA256 of the raw body>``.

VoIPBin signs its webhooks this way (``X-VoIPBIN-Signature``), and voicebot
signs what it sends to the operator's systems the same way
(``X-Voicebot-Signature``: tool calls, call records), so a receiver checks
both with the same few lines.
"""

from __future__ import annotations

import hashlib
import hmac

_SCHEME = "sha256="
# The header voicebot's own signed requests (tool calls, call records) carry.
VOICEBOT_HEADER = "X-Voicebot-Signature"


def sign(body: bytes, secret: str) -> str:
    """The signature header's value for ``body``."""
    return _SCHEME + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(body: bytes, header: str | None, secret: str) -> bool:
    """True when ``header`` is the signature of ``body``; compared in constant time."""
    if not header or not header.startswith(_SCHEME):
        return False
    return hmac.compare_digest(header.encode(), sign(body, secret).encode())

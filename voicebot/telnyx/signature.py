"""Is this request Telnyx's? Its Ed25519 signature checked against the account's public key.

Telnyx signs each webhook over ``{telnyx-timestamp}|{raw body}`` and sends the signature, base64, in
``telnyx-signature-ed25519``; a timestamp more than five minutes from now is refused, so a captured
request cannot be played again later. Ed25519 is cryptography's, not ours.
"""

from __future__ import annotations

import base64
import binascii
import time
from typing import Callable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

SIGNATURE_HEADER = "telnyx-signature-ed25519"
TIMESTAMP_HEADER = "telnyx-timestamp"
TOLERANCE_SECONDS = 300


def load_key(raw: bytes) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(raw)


def verify(key: Ed25519PublicKey, body: bytes, signature: str, timestamp: str,
           now: Callable[[], float] = time.time) -> bool:
    if not timestamp.isdigit() or len(timestamp) > 12 or abs(now() - int(timestamp)) > TOLERANCE_SECONDS:
        return False
    try:
        raw = base64.b64decode(signature.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    try:
        key.verify(raw, timestamp.encode() + b"|" + body)
    except InvalidSignature:
        return False
    return True

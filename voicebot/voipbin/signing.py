"""VoIPBin's webhook signature: ``X-VoIPBIN-Signature: sha256=<hex HMAC-SHA256 of the raw body>``."""

from __future__ import annotations

from ..signing import sign, verify

__all__ = ["HEADER", "sign", "verify"]

HEADER = "X-VoIPBIN-Signature"

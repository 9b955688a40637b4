"""A strict stand-in for Telnyx's side of TeXML: its webhook signing and its ConversationRelay socket.

Telnyx signs each webhook with the account's Ed25519 private key over ``{timestamp}|{raw body}``
(``telnyx-signature-ed25519``, base64; ``telnyx-timestamp``, seconds); the public half is what the
account's portal shows, in base64 (``public_key``). Its TeXML requests are form posts with Twilio-style
fields (``CallSid`` of the form ``v3:...``). Its relay socket is not signed; its ``setup`` names
``callSid``, ``callControlId`` and ``callSessionId``, its ``interrupt`` ``utteranceUntilInterrupt``.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
import uuid
from urllib.parse import urlencode

import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat
from .ws_client import Client


def new_call_sid() -> str:
    return "v3:" + secrets.token_urlsafe(32)


class TelnyxSigner:
    """One Telnyx account's webhook signing key: ``private_key`` (base64 of its 32-byte seed) made afresh
    unless given; ``public_key`` is what the server's TELNYX_PUBLIC_KEY must be."""

    def __init__(self, private_key: str = "") -> None:
        self._key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(private_key, validate=True)) \
            if private_key else Ed25519PrivateKey.generate()
        raw = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.public_key = base64.b64encode(raw).decode()
        seed = self._key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        self.private_key = base64.b64encode(seed).decode()

    def headers(self, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        signature = self._key.sign(stamp.encode() + b"|" + body)
        return {"telnyx-signature-ed25519": base64.b64encode(signature).decode(), "telnyx-timestamp": stamp,
                "Content-Type": "application/x-www-form-urlencoded"}

    def post(self, url: str, fields: dict[str, str], *, timestamp: int | None = None,
             signer: "TelnyxSigner | None" = None) -> requests.Response:
        """A TeXML request as Telnyx sends it (signed by ``signer``'s key, by default this account's)."""
        body = urlencode(fields).encode()
        return requests.post(url, data=body, headers=(signer or self).headers(body, timestamp), timeout=10)


def call_fields(sid: str, **more: str) -> dict[str, str]:
    """What Telnyx posts to a TeXML application's voice URL for an inbound call."""
    return {"AccountSid": str(uuid.uuid4()), "CallSid": sid, "CallSessionId": str(uuid.uuid4()),
            "From": "+15551230000", "To": "+15559870000", "Direction": "inbound", "CallStatus": "ringing",
            **more}


def open_relay(url: str, sid: str) -> Client:
    """Telnyx opens the socket on the URL its TeXML named (unsigned) and sends ``setup``."""
    ws: Client = Client.connect(url)
    ws.send(json.dumps({"type": "setup", "sessionId": str(uuid.uuid4()), "accountSid": str(uuid.uuid4()),
                        "callSid": sid, "callControlId": sid, "callSessionId": str(uuid.uuid4()),
                        "callLegId": str(uuid.uuid4()), "from": "+15551230000", "to": "+15559870000",
                        "direction": "inbound", "callerName": "", "callStatus": "active", "customParameters": {}}))
    return ws


if __name__ == "__main__":  # a key pair for a trial: the server takes the public half, the simulator the private
    pair = TelnyxSigner()
    print(f"TELNYX_PUBLIC_KEY={pair.public_key}\nprivate key (voicebot simulate --telnyx-private-key): "
          f"{pair.private_key}")

"""The end of a front end's call, as the platform reports it: Vapi's ``end-of-call-report`` (to the
assistant's Server URL) and ElevenLabs' ``post_call_transcription`` webhook (HMAC-signed).

Either ends the call in voicebot (its one record, with its analysis), unless voicebot ended it first (its
own end_call or hand-off): then the call is already ended, and the report changes nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any, Mapping

from ..exceptions import InvalidEvent

# ElevenLabs' own SDKs refuse a signature older than 30 minutes.
ELEVENLABS_TOLERANCE_SECONDS = 30 * 60
MAX_REASON_CHARS = 64


def vapi_end(body: dict[str, Any]) -> tuple[str, str] | None:
    """(call id, Vapi's endedReason) of an end-of-call-report; None for Vapi's other server messages."""
    message = body.get("message")
    if not isinstance(message, dict):
        raise InvalidEvent("a Vapi server message has a 'message' object")
    if message.get("type") != "end-of-call-report":
        return None
    call = message.get("call")
    call_id = call.get("id") if isinstance(call, dict) else None
    if not isinstance(call_id, str) or not call_id.strip():
        raise InvalidEvent("an end-of-call-report without message.call.id")
    return call_id.strip(), str(message.get("endedReason") or "")[:MAX_REASON_CHARS]


def elevenlabs_signed(secret: str, header: str | None, body: bytes, now: float | None = None) -> bool:
    """``ElevenLabs-Signature: t=<unix time>,v0=<hex HMAC-SHA256 of "t.body">``, recent and matching."""
    if not header:
        return False
    parts: Mapping[str, str] = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    stamp, given = parts.get("t", ""), parts.get("v0", "")
    if not stamp.isdigit() or not given:
        return False
    if abs((time.time() if now is None else now) - int(stamp)) > ELEVENLABS_TOLERANCE_SECONDS:
        return False
    expected = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, given.strip())


def elevenlabs_end(body: dict[str, Any]) -> tuple[str, str] | None:
    """(conversation id, its status) of a post-call webhook that ends a conversation; None for others
    (``post_call_audio``: the recording, nothing voicebot keeps)."""
    kind = body.get("type")
    if kind not in ("post_call_transcription", "call_initiation_failure"):
        return None
    data = body.get("data")
    call_id = data.get("conversation_id") if isinstance(data, dict) else None
    if not isinstance(call_id, str) or not call_id.strip():
        raise InvalidEvent(f"a {kind} webhook without data.conversation_id")
    status = data.get("status") if isinstance(data, dict) else None
    return call_id.strip(), str(status or kind)[:MAX_REASON_CHARS]

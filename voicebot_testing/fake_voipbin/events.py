"""Event bodies, shaped like VoIPBin's (empty address fields and unset times omitted)."""

from __future__ import annotations

import uuid

from .base import CUSTOMER_ID, NIL_UUID, Json, now


def address(target: str) -> Json:
    kind = "sip" if "@" in target else "tel"
    return {"type": kind, "target": target}


def is_address(value: object) -> bool:
    return (isinstance(value, dict) and value.get("type") in ("tel", "sip", "extension", "agent", "email")
            and isinstance(value.get("target"), str) and bool(value["target"]))


def call_event_data(call_id: str, status: str, caller: str = "+15551230000", callee: str = "+15559870000",
                    direction: str = "incoming") -> Json:
    data = {
        "id": call_id, "customer_id": CUSTOMER_ID, "owner_type": "", "owner_id": NIL_UUID,
        "flow_id": str(uuid.uuid4()), "activeflow_id": str(uuid.uuid4()), "type": "flow",
        "master_call_id": NIL_UUID, "chained_call_ids": [], "recording_id": NIL_UUID, "recording_ids": [],
        "groupcall_id": NIL_UUID, "source": address(caller), "destination": address(callee),
        "status": status, "action": {"id": NIL_UUID, "next_id": NIL_UUID, "type": ""},
        "direction": direction, "mute_direction": "", "hangup_by": "", "hangup_reason": "",
        "tm_create": now(), "tm_update": now(),
    }
    if status == "progressing":
        data["tm_progressing"] = now()
    if status == "hangup":
        data.update(hangup_by="remote", hangup_reason="normal", tm_hangup=now())
    return data


def transcript_event_data(transcribe_id: str, message: str, direction: str = "in",
                          transcript_id: str | None = None) -> Json:
    return {
        "id": transcript_id or str(uuid.uuid4()), "customer_id": CUSTOMER_ID,
        "transcribe_id": transcribe_id, "direction": direction, "message": message,
        "tm_transcript": "0001-01-01T00:00:08.99184Z", "tm_create": now(),
    }


def transcribe_event_data(transcribe: Json) -> Json:
    return {**transcribe, "customer_id": CUSTOMER_ID, "tm_delete": None}


def speech_event_data(transcribe_id: str, direction: str = "in") -> Json:
    return {
        "id": str(uuid.uuid4()), "customer_id": CUSTOMER_ID,
        "streaming_id": str(uuid.uuid4()), "transcribe_id": transcribe_id, "direction": direction,
        "tm_event": now(), "tm_create": now(),
    }

"""One end-of-call record: who called, when, how it ended, what was done, and every line said."""

from __future__ import annotations

import hashlib
import time
from ..clock import iso
from typing import Any, Mapping, Sequence


def record_id(platform: str, call_id: str, started_at: float) -> str:
    """Stable for the call: a record made twice (a crash between making and forgetting) has one id."""
    digest = hashlib.sha256(f"{platform}\x00{call_id}\x00{started_at!r}".encode("utf-8", "surrogatepass"))
    return "rec_" + digest.hexdigest()[:32]


# How an outbound call that never reached a person ended, by its end reason.
_UNANSWERED = {"busy": "busy", "no_answer": "no_answer", "failed": "failed", "canceled": "cancelled",
               "cancelled": "cancelled", "voicemail": "voicemail"}


def outcome_of(session: Mapping[str, Any], end_reason: str) -> str | None:
    """An outbound call's outcome: human, voicemail, busy, no_answer, failed or cancelled; None inbound."""
    if session.get("direction", "inbound") != "outbound":
        return None
    if end_reason in _UNANSWERED:
        return _UNANSWERED[end_reason]
    return str(session.get("outcome") or ("human" if session.get("greeted") else "failed"))


def build_record(*, platform: str, call_id: str, session: Mapping[str, Any], lines: Sequence[Mapping[str, Any]],
                 end_reason: str, ended_at: float | None = None, details: dict[str, Any] | None = None,
                 one_record_per_call_id: bool = False) -> dict[str, Any]:
    """``end_reason``: hung_up, bot_ended, transferred, ended (the article's call.ended) or expired.

    With ``one_record_per_call_id`` (a platform that never reuses call ids) the id depends on the call id
    alone; otherwise on its start too, as the article's contract may start a call id afresh.
    """
    ended_at = time.time() if ended_at is None else ended_at
    started_at = float(session.get("started_at") or ended_at)
    return {
        "id": record_id(platform, call_id, 0.0 if one_record_per_call_id else started_at),
        "type": "call.record",
        "platform": platform,
        "call_id": call_id,
        "direction": session.get("direction", "inbound"),
        "outcome": outcome_of(session, end_reason),
        "campaign_id": session.get("campaign_id"),
        "caller": session.get("caller"),
        "called": session.get("called"),
        "started_at": iso(started_at),
        "ended_at": iso(ended_at),
        "duration_seconds": round(max(0.0, ended_at - started_at), 3),
        "end_reason": end_reason,
        **(details or {}),
        "turns": session.get("turns", 0),
        "fallbacks": session.get("fallbacks", 0),
        "actions": session.get("actions", []),
        "usage": session.get("usage", {}),
        "variables": session.get("variables") or {},
        # What CONTEXT_URL said of the call (its variables and instructions, or why it said nothing).
        "context": session.get("context"),
        "transcript": lines,
        # Lines said but not kept: a call longer than MAX_TRANSCRIPT_LINES keeps its last ones.
        "transcript_dropped": max(0, int(session.get("transcript_lines", len(lines))) - len(lines)),
    }

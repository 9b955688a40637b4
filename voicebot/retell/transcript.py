"""Retell's transcript, read as a turn: what the caller said since voicebot last spoke, and what they heard.

Retell sends the whole call's transcript with each request (``[{role: agent|user, content}]``), agent
turns as they were spoken (cut where the caller talked over them). The caller's new words are the user
utterances after the last agent one; that agent utterance is what the caller heard of the last reply.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from ..exceptions import InvalidEvent

MAX_UTTERANCES = 2_000
MAX_CONTENT_CHARS = 20_000


@dataclass(frozen=True)
class Transcript:
    """A request's transcript: ``(role, content)`` pairs, oldest first."""

    utterances: tuple[tuple[str, str], ...]

    @property
    def agent_turns(self) -> int:
        return sum(1 for role, _ in self.utterances if role == "agent")

    @property
    def heard(self) -> str | None:
        """The last agent utterance: what the caller heard of voicebot's last words (None: nothing yet)."""
        return next((content for role, content in reversed(self.utterances) if role == "agent"), None)

    @property
    def new_words(self) -> str:
        """The caller's words after the last agent utterance, joined."""
        words: list[str] = []
        for role, content in reversed(self.utterances):
            if role == "agent":
                break
            if role == "user" and content.strip():
                words.append(content.strip())
        return " ".join(reversed(words))

    def event_id(self, kind: str) -> str:
        """The same transcript asked again (Retell reconnecting mid-response) is the same turn."""
        digest = hashlib.sha256(json.dumps([kind, self.utterances], separators=(",", ":")).encode())
        return digest.hexdigest()[:32]


def transcript_of(message: dict[str, Any]) -> Transcript:
    raw = message.get("transcript")
    if not isinstance(raw, list) or len(raw) > MAX_UTTERANCES:
        raise InvalidEvent(f"'transcript' must be a list of at most {MAX_UTTERANCES} utterances")
    utterances = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("content"), str):
            raise InvalidEvent("each utterance must be an object with a 'role' and a 'content' string")
        role = item.get("role")
        if role in ("agent", "user"):  # others (tool calls, node transitions) are not what was said
            utterances.append((str(role), item["content"][:MAX_CONTENT_CHARS]))
    return Transcript(tuple(utterances))

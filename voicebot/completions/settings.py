"""The Chat Completions front ends' settings, added to the one registry by ``voicebot.platforms``."""

from __future__ import annotations

from ..config import Setting, text

SETTINGS: tuple[Setting, ...] = (
    Setting("COMPLETIONS_TOKEN", "", text,
            "The key front ends send as `Authorization: Bearer` to `/openai/v1/chat/completions`, "
            "`/vapi/chat/completions`, `/elevenlabs/chat/completions` and `/vapi/events` (Vapi's custom-LLM "
            "credential, ElevenLabs' secret, Telnyx's API key ref, Pipecat's or LiveKit's `api_key`). Unset: "
            "WEBHOOK_TOKEN; neither set: this machine only (a local trial).",
            secret=True),
    Setting("ELEVENLABS_WEBHOOK_SECRET", "", text,
            "The HMAC secret of ElevenLabs' post-call webhook: `POST /elevenlabs/post-call` ends the "
            "conversation's call when its `ElevenLabs-Signature` checks. Unset: that endpoint is off (calls end "
            "on voicebot's own end_call or the session TTL).",
            secret=True),
)

"""Retell's settings, added to the one registry (and the README's table) by ``voicebot.platforms``."""

from __future__ import annotations

from ..config import Setting, http_url, text

SETTINGS: tuple[Setting, ...] = (
    Setting("RETELL_API_KEY", "", text,
            "The Retell account's API key: each socket Retell opens on `/retell/{call_id}` is checked against "
            "Retell's API (`GET /v2/get-call`) before a word is said, and Retell's webhooks "
            "(`POST /retell/webhook`) are verified with it (`x-retell-signature`). Unset: those endpoints are off.",
            secret=True),
    Setting("RETELL_API_URL", "https://api.retellai.com", http_url,
            "Retell's REST API base URL (a local fake in tests and trials)."),
)

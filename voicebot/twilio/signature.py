"""Is this request Twilio's? Its signature checked, with Twilio's own validator, against the URL Twilio called."""

from __future__ import annotations

from typing import Any, Mapping

from flask import Request
from twilio.request_validator import RequestValidator, get_signature_algorithm  # type: ignore[import-untyped]

HEADER = "X-Twilio-Signature"
# Set when the account signs with a webhook SharedKey instead of the Auth Token (it names the algorithm).
SETTINGS_HEADER = "X-Twilio-Webhooks-Signature-Settings"


def base_url(request: Request, config: Mapping[str, Any]) -> str:
    """Scheme and host Twilio used: PUBLIC_URL, or the request's, or a trusted proxy's forwarded ones.

    Behind a proxy that ends TLS, the request arrives as http://127.0.0.1:8000
    while Twilio signed https://bot.example.com; forwarded headers say which,
    but anybody can send them, so only a listed proxy's are believed.
    """
    if config["PUBLIC_URL"]:
        return str(config["PUBLIC_URL"]).rstrip("/")
    scheme, host = request.scheme, request.host
    if request.remote_addr in config["TRUSTED_PROXIES"]:
        scheme = request.headers.get("X-Forwarded-Proto", scheme).split(",")[0].strip() or scheme
        host = request.headers.get("X-Forwarded-Host", host).split(",")[0].strip() or host
    return f"{scheme}://{host}"


def websocket_url(url: str) -> str:
    """The ws(s):// form of an http(s):// URL: where ConversationRelay connects, and what it signs."""
    return "wss://" + url[len("https://"):] if url.startswith("https://") else "ws://" + url.split("://", 1)[-1]


def signed_url(request: Request, config: Mapping[str, Any]) -> str:
    query = request.query_string.decode("latin-1")
    url = base_url(request, config) + request.path + (f"?{query}" if query else "")
    # A WebSocket handshake (ConversationRelay's) is signed over the wss:// URL it was given.
    return websocket_url(url) if request.headers.get("Upgrade", "").lower() == "websocket" else url


def is_from_twilio(request: Request, config: Mapping[str, Any], validator: RequestValidator) -> bool:
    signature = request.headers.get(HEADER)
    if not signature:
        return False
    algorithm = get_signature_algorithm(request.headers.get(SETTINGS_HEADER))
    # The MultiDict itself: the validator reads every value of a repeated field with getlist.
    params = request.form if request.method == "POST" else {}
    return bool(validator.validate(signed_url(request, config), params, signature, algorithm))

"""Who may call an endpoint that has no platform signature: a bearer token, or this machine only.

The article's contract carries no signature, and anyone who knows a call id
could otherwise read that call's conversation back, talk into it, end it, and
spend model tokens. With its token set, a request must carry
``Authorization: Bearer <token>``. Without it, only a local trial is served: a
request from a loopback address that no proxy relayed (a proxy on the same
host, nginx say, also connects from loopback, but says whom it forwards for).

A browser on this machine is a loopback client too, on behalf of any web page
it shows, so a local trial also needs what no other site's page can send: a
``Host`` that names this machine (a page on a rebound name sends its own), no
``Origin`` of another site, and, for a body, ``Content-Type: application/json``
(a form or a no-cors fetch cannot set it without the browser asking first).
"""

from __future__ import annotations

import hmac
import ipaddress
from urllib.parse import urlsplit

from flask import Request

# Headers a reverse proxy or a platform's router adds to what it forwards.
_FORWARDING = ("X-Forwarded-For", "X-Forwarded-Host", "X-Real-IP", "Forwarded", "Via")


def bearer_matches(request: Request, token: str) -> bool:
    given = request.headers.get("Authorization", "")
    scheme, _, value = given.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(value.strip().encode("utf-8", "surrogatepass"), token.encode())


def is_local(request: Request) -> bool:
    """A request made on this machine, directly."""
    try:
        loopback = ipaddress.ip_address(request.remote_addr or "").is_loopback
    except ValueError:
        return False
    return loopback and not any(name in request.headers for name in _FORWARDING)


def local_trial_refusal(request: Request) -> tuple[int, str, str] | None:
    """Why a local trial's request is refused, as (status, error, message); None when it is served."""
    if not is_local(request):
        return 403, "forbidden", "this endpoint answers only requests made on this machine until WEBHOOK_TOKEN is set"
    if not _names_this_machine(request.host):
        return 403, "forbidden_host", ("the Host header does not name this machine (localhost, 127.0.0.1 or "
                                       "[::1]): set WEBHOOK_TOKEN to serve other names")
    origin = request.headers.get("Origin")
    if origin is not None and not _names_this_machine(urlsplit(origin).netloc):
        return 403, "forbidden_origin", "a page of another site may not use this endpoint"
    if request.method == "POST" and request.mimetype != "application/json":
        return 415, "unsupported_media_type", "send the body as Content-Type: application/json"
    return None


def _names_this_machine(host: str) -> bool:
    try:
        name = urlsplit("//" + host).hostname or ""
    except ValueError:
        return False
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False

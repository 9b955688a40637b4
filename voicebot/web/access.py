"""Who may call an endpoint that has no platform signature: a bearer token, or this machine only.

The article's contract carries no signature, and anyone who knows a call id
could otherwise read that call's conversation back, talk into it, end it, and
spend model tokens. With its token set, a request must carry
``Authorization: Bearer <token>``. Without it, only a local trial is served: a
request from a loopback address that no proxy relayed (a proxy on the same
host, nginx say, also connects from loopback, but says whom it forwards for).
"""

from __future__ import annotations

import hmac
import ipaddress

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

"""A call's socket ticket: the right to open one WebSocket for one call, given by the webhook that announced it.

A platform that relays a call over a WebSocket (Twilio's ConversationRelay,
Telnyx's) opens it on a URL voicebot chose. A signature over the handshake
proves the request came from the platform, not which call the socket is for:
the call id arrives later, unsigned, in the first message. So the signed
webhook that announces the call (``/voice``) puts a ticket in the socket's
URL (inside what the platform signs), kept in the call's session:

- **bound** to the call: the URL names it, and the socket's ``setup`` must too;
- **short-lived**: it must be used within ``TICKET_SECONDS`` of being given;
- **single use**: the socket that opens with it holds it; a second handshake
  with the same URL (a replayed header from a proxy's log) is refused while
  the first is open and after the call has ended. A socket handed back on
  purpose (a worker stopping, so the platform reconnects elsewhere) gives the
  ticket back for one more use, within ``TICKET_SECONDS``.

It lives in the call's channel, so it is read and changed under the call's
lock, on whichever worker or instance the socket reaches.
"""

from __future__ import annotations

import hmac
import secrets
import time
from typing import Callable, TypedDict, cast

from .session import Channel

# Twilio opens the socket as soon as it reads the TwiML, and reconnects within seconds of a hand-back.
TICKET_SECONDS = 60.0
CHANNEL_KEY = "socket_ticket"
# 128 bits of randomness, URL-safe.
TICKET_BYTES = 16
MAX_TICKET_CHARS = 64


class Ticket(TypedDict):
    """A call's socket ticket as its channel keeps it."""

    value: str     # what the socket's URL carries
    open: bool     # a socket holds it now
    until: float   # wall-clock time (every instance's clock) after which an unheld ticket is no longer good


def issue(channel: Channel, now: Callable[[], float] = time.time) -> str:
    """The call's ticket, given once: a call announced again keeps its ticket (and its socket's URL)."""
    ticket = cast("Ticket | None", channel.get(CHANNEL_KEY))
    if ticket is None:
        ticket = {"value": secrets.token_urlsafe(TICKET_BYTES), "open": False, "until": now() + TICKET_SECONDS}
        channel[CHANNEL_KEY] = ticket
    return ticket["value"]


def redeem(channel: Channel, value: str, now: Callable[[], float] = time.time) -> bool:
    """Take the ticket for a socket that presents ``value``; False (and nothing changes) unless it is good."""
    ticket = cast("Ticket | None", channel.get(CHANNEL_KEY))
    if ticket is None or ticket["open"] or now() > ticket["until"]:
        return False
    if not hmac.compare_digest(ticket["value"].encode(), value.encode("utf-8", "replace")):
        return False
    ticket["open"] = True
    return True


def hand_back(channel: Channel, now: Callable[[], float] = time.time) -> None:
    """The socket was closed on purpose, for the platform to open it again: one more use, soon."""
    ticket = cast("Ticket | None", channel.get(CHANNEL_KEY))
    if ticket is not None:
        ticket["open"] = False
        ticket["until"] = now() + TICKET_SECONDS


def well_formed(value: object) -> bool:
    """A value that could be a ticket (checked before the store is asked)."""
    return isinstance(value, str) and 0 < len(value) <= MAX_TICKET_CHARS and value.isascii()

"""Which numbers voicebot may dial: a leaked operator token must not become toll fraud.

Two rules, both from the settings:

- an allowlist of E.164 prefixes (``DIAL_ALLOWED``: countries ``+1``, ``+44``
  or narrower ranges ``+3361``), by default the country calling code of
  ``OUTBOUND_NUMBER``, the caller's own country; ``*`` allows any;
- premium-rate and shared-cost numbers (``+1 900``, the UK's 09 and 084/087,
  France's 089...) are refused even inside it, unless ``DIAL_PREMIUM=1``.
  Which ranges those are comes from libphonenumber's data (the
  ``phonenumbers`` package), kept by Google for every country: a list of our
  own would go stale.

Satellite and international networks (+881, +882, +883, among the costliest
destinations) have country codes of their own, so no country's allowlist
covers them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import phonenumbers

from ..exceptions import ConfigError

ANY = "*"
# Ranges billed to the caller at a premium: refused unless DIAL_PREMIUM=1.
COSTLY_TYPES = {phonenumbers.PhoneNumberType.PREMIUM_RATE: "premium-rate",
                phonenumbers.PhoneNumberType.SHARED_COST: "shared-cost"}


@dataclass(frozen=True)
class Destinations:
    """The dialling policy: ``prefixes`` allowed (None: any), and whether premium ranges may be dialled."""

    prefixes: tuple[str, ...] | None
    premium: bool = False

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> "Destinations":
        allowed: tuple[str, ...] = settings["DIAL_ALLOWED"]
        if ANY in allowed:
            return cls(None, settings["DIAL_PREMIUM"])
        if not allowed and settings["OUTBOUND_NUMBER"]:
            allowed = (country_prefix(settings["OUTBOUND_NUMBER"]),)
        return cls(allowed, settings["DIAL_PREMIUM"])

    def refusal(self, number: str) -> str | None:
        """Why ``number`` (E.164) may not be dialled, or None when it may."""
        if self.prefixes is not None and not number.startswith(self.prefixes):
            allowed = ", ".join(self.prefixes) or "none"
            return f"{number} is outside the destinations voicebot may dial (DIAL_ALLOWED: {allowed})"
        if not self.premium:
            kind = COSTLY_TYPES.get(_number_type(number))
            if kind is not None:
                return f"{number} is a {kind} number, which voicebot does not dial (DIAL_PREMIUM=1 allows it)"
        return None


def country_prefix(number: str) -> str:
    """``+1`` for ``+15559870000``: the number's country calling code."""
    try:
        return f"+{phonenumbers.parse(number).country_code}"
    except phonenumbers.NumberParseException:
        raise ConfigError(f"OUTBOUND_NUMBER {number!r} has no country calling code libphonenumber knows") from None


def _number_type(number: str) -> int:
    try:
        parsed = phonenumbers.parse(number)
    except phonenumbers.NumberParseException:
        return phonenumbers.PhoneNumberType.UNKNOWN
    return int(phonenumbers.number_type(parsed))


def parse_allowed(value: str) -> tuple[str, ...]:
    """DIAL_ALLOWED: comma-separated E.164 prefixes (``+1,+44``), or ``*``."""
    prefixes = tuple(item.strip() for item in value.split(",") if item.strip())
    for prefix in prefixes:
        if prefix != ANY and not (prefix.startswith("+") and prefix[1:].isdigit() and 1 < len(prefix) <= 16
                                  and prefix[1] != "0"):
            raise ValueError(f"must be E.164 prefixes such as +1 or +4420, or *; {prefix!r} is not one")
    return prefixes

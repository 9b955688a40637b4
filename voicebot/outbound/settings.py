"""The settings of calls voicebot places, added to the one registry by ``voicebot.platforms``."""

from __future__ import annotations

import re
from typing import Any, Mapping

from ..config import Setting, flag, text
from ..exceptions import ConfigError
from .destinations import country_prefix, parse_allowed

PLATFORMS = ("voipbin", "twilio")
E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")

SETTINGS: tuple[Setting, ...] = (
    Setting("OUTBOUND_NUMBER", "", text,
            "The number voicebot's calls come from (`+15559870000`, a number of the VoIPBin or Twilio account). "
            "Unset: voicebot places no calls."),
    Setting("OUTBOUND_TOKEN", "", text,
            "Bearer token `POST /calls` takes. Unset: WEBHOOK_TOKEN. With neither, `POST /calls` is off: "
            "nothing places a call for an anonymous caller.", secret=True),
    Setting("OUTBOUND_PLATFORM", "", text,
            "`voipbin` or `twilio`: where calls are placed when both can and a request does not say. Unset: "
            "the one that can."),
    Setting("OUTBOUND_GREETING", "Hello, this is an automated assistant calling. Is now a good time to talk?",
            text,
            "What a person who answers a call voicebot placed hears first; `{{name}}` placeholders are filled from "
            "the call's variables (a call without a value for a bare `{{name}}` is refused when it is placed)."),
    Setting("OUTBOUND_SYSTEM_PROMPT", "", text,
            "The model's instructions on calls voicebot placed, with `{{name}}` placeholders as "
            "OUTBOUND_GREETING. Unset: SYSTEM_PROMPT."),
    Setting("DIAL_ALLOWED", (), parse_allowed,
            "Where voicebot may place calls: comma-separated E.164 prefixes, countries (`+1,+44`) or narrower "
            "ranges (`+3361`); `*` for anywhere. Unset: the country calling code of OUTBOUND_NUMBER (`+1` for "
            "`+15559870000`). A call or a campaign contact outside it is refused (403), before anything is dialled.",
            shown="(the country of OUTBOUND_NUMBER)"),
    Setting("DIAL_PREMIUM", False, flag,
            "1: premium-rate and shared-cost numbers (`+1 900`, the UK's 09 and 087, as libphonenumber knows them "
            "for every country) may be dialled where DIAL_ALLOWED covers them. 0: they are refused, so a leaked "
            "token cannot become toll fraud."),
    Setting("VOICEMAIL_MESSAGE", "", text,
            "Left on an answering machine after its greeting ends, filled from the call's variables, before "
            "hanging up (Twilio; VoIPBin hangs up on a machine at once). Unset: hang up at once."),
)


def check(settings: Mapping[str, Any]) -> None:
    number = settings["OUTBOUND_NUMBER"]
    if not number:
        return
    if not E164.match(number):
        raise ConfigError(f"OUTBOUND_NUMBER must be a number in E.164 form, such as +15559870000; got {number!r}")
    country_prefix(number)
    platform = settings["OUTBOUND_PLATFORM"]
    if platform and platform not in PLATFORMS:
        raise ConfigError(f"OUTBOUND_PLATFORM must be one of {', '.join(PLATFORMS)}; got {platform!r}")
    able = able_platforms(settings)
    if not able:
        raise ConfigError("OUTBOUND_NUMBER is set, and no platform can place calls: VoIPBin needs "
                          "VOIPBIN_ACCESS_KEY, VOIPBIN_FETCH_TOKEN and PUBLIC_URL; Twilio needs TWILIO_ACCOUNT_SID, "
                          "TWILIO_AUTH_TOKEN and PUBLIC_URL")
    if platform and platform not in able:
        raise ConfigError(f"OUTBOUND_PLATFORM={platform}, which cannot place calls with these settings")


def able_platforms(settings: Mapping[str, Any]) -> list[str]:
    """The platforms whose settings let voicebot place calls on them."""
    able = []
    if settings["PUBLIC_URL"] and settings["VOIPBIN_ACCESS_KEY"] and settings["VOIPBIN_FETCH_TOKEN"]:
        able.append("voipbin")
    if settings["PUBLIC_URL"] and settings["TWILIO_ACCOUNT_SID"] and settings["TWILIO_AUTH_TOKEN"]:
        able.append("twilio")
    return able

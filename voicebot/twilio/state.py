"""What the Twilio platform keeps for its views: its voice, its signature validator."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from ..runtime import runtime
from .twiml import Voice

KEY = "twilio"  # the platform's name: its place in the runtime's platforms


@dataclass
class TwilioState:
    """``validator`` is None (and ``disabled_because`` says why) when no Auth Token is set."""

    voice: Voice
    disabled_because: str = ""
    validator: Any = None  # twilio.request_validator.RequestValidator (untyped)


def twilio_state() -> TwilioState:
    """The Twilio state of the app handling this request."""
    return cast(TwilioState, runtime().platforms[KEY])

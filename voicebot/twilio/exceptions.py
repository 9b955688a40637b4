"""Twilio's REST errors: the generic platform errors, named for Twilio in logs and error words."""

from ..exceptions import PlatformError, PlatformRejected, PlatformUnavailable


class TwilioError(PlatformError):
    """Twilio's REST API did not do what was asked."""

    platform = "twilio"
    display_name = "Twilio"


class TwilioUnavailable(TwilioError, PlatformUnavailable):
    """Unreachable, timed out, rate limited or a 5xx."""


class TwilioRejected(TwilioError, PlatformRejected):
    """A 4xx from Twilio (a number it will not call, a wrong account)."""

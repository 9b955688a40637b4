"""VoIPBin's errors: the generic platform errors, named for VoIPBin in logs and error words."""

from ..exceptions import PlatformError, PlatformRateLimited, PlatformRejected, PlatformUnavailable


class VoipbinError(PlatformError):
    """VoIPBin's REST API did not do what was asked."""

    platform = "voipbin"
    display_name = "VoIPBin"


class VoipbinUnavailable(VoipbinError, PlatformUnavailable):
    """Unreachable, timed out, rate limited or a 5xx (see PlatformUnavailable.maybe_done)."""


class VoipbinRateLimited(VoipbinUnavailable, PlatformRateLimited):
    """429: over VoIPBin's request rate; nothing was done."""


class VoipbinRejected(VoipbinError, PlatformRejected):
    """A 4xx from VoIPBin."""

"""What can go wrong with an outgoing request, in voicebot's words (libcurl's errors are mapped to these)."""

from __future__ import annotations


class EgressError(Exception):
    """A request that got no usable answer; ``str()`` says why, fit for a log line or the model.

    ``sent`` is False when nothing of the request can have reached the server (no connection was made,
    or the deadline passed before it went out): doing it again cannot do it twice.
    """

    def __init__(self, message: str, *, sent: bool = True) -> None:
        super().__init__(message)
        self.sent = sent


class EgressTimeout(EgressError):
    """The deadline passed (or the request was cut off) before its answer came whole."""


class BodyTooLarge(EgressError):
    """The answer's body (decoded) is larger than the request allows: read no further, and not kept."""


class AddressRefused(EgressError):
    """The host resolves only to addresses the request's policy refuses: nothing was sent."""

    def __init__(self, message: str) -> None:
        super().__init__(message, sent=False)

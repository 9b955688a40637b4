"""voicebot's own exception tree.

Vendor errors (redis-py, the anthropic SDK, requests) are mapped into these at
the edge, so the conversation core and the views handle one vocabulary.
"""


class VoicebotError(Exception):
    """Base of every error voicebot raises on purpose."""


class ConfigError(VoicebotError):
    """The environment asks for something voicebot cannot run with."""


class InvalidEvent(VoicebotError):
    """A webhook body that does not follow its contract (answered with 400)."""


class StoreError(VoicebotError):
    """The session store failed."""


class StoreUnavailable(StoreError):
    """The session store cannot be reached; a retry later may succeed."""


class StoreFull(StoreUnavailable):
    """The in-memory store holds as many live calls as it may; a new one must wait for others to end."""


class CallBusy(StoreError):
    """Another turn of the same call held its lock for longer than we may wait."""


class LockLost(StoreError):
    """Our lease on a call's lock ran out before we wrote back; the write was dropped."""


class LLMError(VoicebotError):
    """The language model gave no usable reply."""


class LLMTimeout(LLMError):
    """The model did not answer within the turn's deadline."""


class LLMUnavailable(LLMError):
    """Overloaded, rate limited, a 5xx, or unreachable: worth trying again later."""


class LLMRejected(LLMError):
    """The model's API refused the request (4xx): retrying the same request will not help."""


class LLMKeyRejected(LLMRejected):
    """401/403: the API key is wrong, revoked or lacks access; every call will fail until it is fixed."""


class PlatformError(VoicebotError):
    """A platform's REST API (VoIPBin's, Twilio's) did not do what was asked.

    Each platform subclasses these with its own ``platform`` (the word its
    errors carry) and ``display_name``; the error handlers know only these bases.
    """

    platform = "platform"
    display_name = "the platform"


class PlatformUnavailable(PlatformError):
    """Unreachable, timed out, rate limited or a 5xx: the same request may succeed later.

    ``maybe_done`` is True when the request reached the platform and may have
    taken effect although no answer says so (a read timeout, a 5xx): repeating
    it could do it twice.
    """

    def __init__(self, message: str, *, maybe_done: bool = False) -> None:
        super().__init__(message)
        self.maybe_done = maybe_done


class PlatformRateLimited(PlatformUnavailable):
    """429: the account's request rate is over the platform's limit; nothing was done."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PlatformRejected(PlatformError):
    """A 4xx: the request itself was refused (bad key, unknown id, call not live, already exists)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status

"""A request's time budget: every wait inside one webhook comes out of it.

A platform stops waiting for a webhook's answer after a fixed time (VoIPBin
and Twilio: 15 s) and sends the event again. Each lock wait, model call and
REST request of a webhook is therefore capped by what is left of the
request's budget, not only by its own setting, so they add up to less.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

# VoIPBin and Twilio wait 15 s for a webhook's response headers, then send the
# event again; 2 s of that are kept for the network, the store and the response.
PLATFORM_WAIT_SECONDS = 15.0
RESPONSE_BUDGET = PLATFORM_WAIT_SECONDS - 2.0


class Deadline:
    """A wall-clock budget on a monotonic clock: what is left of it, and a part of it capped for one step."""

    __slots__ = ("at", "_clock")

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.at = clock() + seconds

    def remaining(self) -> float:
        return max(0.0, self.at - self._clock())

    def cap(self, seconds: float, *, keep: float = 0.0) -> float:
        """``seconds``, or less if the budget (keeping ``keep`` seconds for later steps) runs out first."""
        return max(0.0, min(seconds, self.remaining() - keep))

    def allows(self, seconds: float) -> bool:
        """True when ``seconds`` more still fit in the budget."""
        return self.remaining() >= seconds


def unbounded() -> Deadline:
    """For work no platform is waiting on (a CLI command, a test)."""
    return Deadline(3600.0)


# The one carrier of a thread's deadline: a webhook's budget, narrowed by ``within`` for one step (the model's
# call, a REST request, a tool). Everything that waits deep below reads it here: a Redis retry through a
# failover, and every read and write of an outgoing HTTP request (voicebot/egress).
_in_effect = threading.local()


def put_in_effect(deadline: Deadline | None) -> None:
    """Make ``deadline`` the one that waits deep below respect in this thread, until another is put in
    effect (None: none). The app puts each webhook's budget in effect."""
    _in_effect.deadline = deadline


def in_effect() -> Deadline | None:
    """The deadline in effect in this thread, if any."""
    return getattr(_in_effect, "deadline", None)


def remaining_in_effect() -> float | None:
    """Seconds left of the deadline in effect in this thread; None when none is."""
    deadline = getattr(_in_effect, "deadline", None)
    return None if deadline is None else deadline.remaining()


def time_left() -> float:
    """Seconds left of the deadline in effect in this thread (infinite when none is)."""
    deadline = getattr(_in_effect, "deadline", None)
    return float("inf") if deadline is None else deadline.remaining()


@contextmanager
def within(seconds: float) -> Iterator[Deadline]:
    """Everything this thread waits for ends within ``seconds`` from now, or sooner if the deadline already in
    effect (a webhook's budget) ends first; the one before comes back into effect afterwards."""
    outer: Deadline | None = getattr(_in_effect, "deadline", None)
    step = Deadline(seconds)
    if outer is not None and outer.at < step.at:
        step = outer
    _in_effect.deadline = step
    try:
        yield step
    finally:
        _in_effect.deadline = outer

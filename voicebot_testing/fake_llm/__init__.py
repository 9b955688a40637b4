"""A loopback server that speaks the Anthropic Messages API, for tests and benchmarks.

It is as strict as the real API about what it accepts (a missing
``max_tokens``, a role other than user/assistant, empty content, no API key
or version header: all 4xx), so code that passes against it sends requests
the real API takes. Its replies echo the markers (words starting with ``mk``)
of every user message it was sent, in order, so a caller can check that a
reply was made from exactly its own call's history. It can be made slow
(``latency``, ``jitter``), overloaded (``fail_rate``: 529) or hanging
(``hang_rate``) or trickle its answer a few bytes at a time (``trickle``,
seconds between pieces), which no per-read timeout catches.

Offered the call tools, it uses them as a model would: ``end_call`` when the
caller's last words say goodbye, ``transfer_call`` when they ask for a human,
with real ``tool_use`` blocks; and it refuses, as the real API does, a history
where a ``tool_use`` is not answered by a ``tool_result`` in the next message.
"""

from .cache import PromptCache
from .replies import DEFAULT_REPLY, MARKER, echo_reply
from .server import FakeMessagesAPI, serve
from .validation import InvalidRequest, known_models, validate

__all__ = ["DEFAULT_REPLY", "MARKER", "FakeMessagesAPI", "InvalidRequest", "PromptCache", "echo_reply",
           "known_models", "serve", "validate"]

"""A stand-in for VoIPBin on loopback: its REST API, its signed webhook sender, its flow runner.

It answers the way VoIPBin's code does (read from its monorepo, see
``../shared/voipbin-api.md``), not the way its docs say:

- the access key as the ``accesskey`` query parameter or cookie, 401 otherwise;
- errors as ``{"error": {"status", "reason", "message", "request_id"}}``;
- ``POST /transcribes`` 200; a second progressing transcribe of the same call
  and language 409; ``GET /transcribes?reference_type=call&reference_id=``;
- ``POST /speakings`` 201, created ``active``; a second active session on the
  call 500; ``GET /speakings`` lists the whole account, newest first;
- ``say`` / ``flush`` 404 once a session is not active or its stream is gone;
- ``PUT /customer`` requires all seven fields and writes every one;
- lists as ``{"result": [...], "next_page_token": ...}``;
- a hang-up stops the call's transcribes and speakings.

Faults a test can ask for, per action (the last path segment): ``fail_next``
(500, nothing done), ``hang_next`` (no answer, nothing done), ``lose_answer``
(done, then no answer), ``rate_limit_next`` (429 with ``Retry-After``);
``latency`` delays every request; ``rate_limit`` turns on VoIPBin's per-customer
token bucket. Events go out as VoIPBin sends them: compact Go JSON, signed,
retried on 5xx or a transport error up to three attempts, 1 s apart.
"""

from .base import CUSTOMER_ID, NIL_UUID, ApiError, Json, go_json, now
from .events import call_event_data, speech_event_data, transcribe_event_data, transcript_event_data
from .flows import FlowRunner
from .server import FakeVoipbin, serve

__all__ = ["CUSTOMER_ID", "NIL_UUID", "ApiError", "FakeVoipbin", "FlowRunner", "Json", "call_event_data",
           "go_json", "now", "serve", "speech_event_data", "transcribe_event_data", "transcript_event_data"]

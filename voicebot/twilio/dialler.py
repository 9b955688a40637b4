"""Placing calls on Twilio: the Calls API through twilio-python, answered by the same webhooks as inbound calls.

Twilio requests ``/webhook/twilio/voice`` once the call is answered and its
answering-machine detection is done (``AnsweredBy``): a person hears
OUTBOUND_GREETING; a machine gets VOICEMAIL_MESSAGE after its greeting ends
(``DetectMessageEnd``) or, with none, is hung up on at once. ``/status`` ends
a call that was never answered (busy, no answer, failed) with its record.
"""

from __future__ import annotations

import logging
from typing import Any

from ..conversation import Conversation
from ..speaker import Dialler
from .exceptions import TwilioRejected, TwilioUnavailable

log = logging.getLogger(__name__)

# The Calls API's request, from connecting to its answer: well within what the request placing it waits.
REQUEST_SECONDS = 8.0


class TwilioDialler(Dialler):
    """Places calls through Twilio's REST API (twilio-python), answered by /webhook/twilio/voice."""

    platform = "twilio"

    def __init__(self, client: Any, conversation: Conversation, caller_id: str, public_url: str,
                 voicemail: bool) -> None:
        self.client = client  # twilio.rest.Client, its API's base URL set from TWILIO_API_URL
        self.conversation = conversation
        self.caller_id = caller_id
        self.public_url = public_url.rstrip("/")
        self.voicemail = voicemail

    def place_call(self, to: str, variables: dict[str, str], *, campaign_id: str | None = None,
                   leave_voicemail: bool = True) -> str:
        from twilio.base.exceptions import TwilioException, TwilioRestException  # type: ignore[import-untyped]

        try:
            call = self.client.calls.create(
                to=to, from_=self.caller_id, url=f"{self.public_url}/webhook/twilio/voice", method="POST",
                status_callback=f"{self.public_url}/webhook/twilio/status", status_callback_method="POST",
                # A person is told from a machine at once; with a message to leave, a machine is waited for
                # until its greeting ends, so the message is heard after the beep.
                machine_detection="DetectMessageEnd" if self.voicemail and leave_voicemail else "Enable")
        except TwilioRestException as exc:
            if exc.status >= 500 or exc.status == 429:
                raise TwilioUnavailable(f"POST Calls: HTTP {exc.status}: {exc.msg}") from None
            raise TwilioRejected(f"POST Calls: HTTP {exc.status}: {exc.msg}", exc.status) from None
        except TwilioException as exc:  # the egress layer's failures come as twilio-python's
            raise TwilioUnavailable(f"POST Calls: {exc}") from None
        self.conversation.open_outbound(call.sid, to, self.caller_id, variables, campaign_id=campaign_id,
                                        leave_voicemail=leave_voicemail)
        return str(call.sid)

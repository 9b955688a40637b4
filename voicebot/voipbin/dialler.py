"""Placing calls on VoIPBin: ``POST /calls`` with a flow that hands the answered call to voicebot.

The call's inline flow is ``amd`` (an answering machine is hung up on, with
``hangup_reason: "amd"``) and then voicebot's ``fetch`` loop, so the call is
voicebot's as a call handed over by fetch is: it greets on
``call_progressing``, and can hang up or hand the caller to a person. The
call's variables also go to VoIPBin (a flow reads them as ``${key}``).
"""

from __future__ import annotations

import logging
from typing import Any

from ..conversation import Conversation
from ..deadline import Deadline
from ..speaker import Dialler
from .channel import VoipbinChannel
from .client import VoipbinClient
from .exceptions import VoipbinError

log = logging.getLogger(__name__)

# One POST /calls, and the session's write: well within what the request placing it waits.
PLACE_SECONDS = 8.0


class VoipbinDialler(Dialler):
    """Places calls through VoIPBin's REST API, with a flow that hands each one to voicebot's fetch."""

    platform = "voipbin"

    def __init__(self, client: VoipbinClient, conversation: Conversation, caller_id: str, fetch_url: str) -> None:
        self.client = client
        self.conversation = conversation
        self.caller_id = caller_id
        self.fetch_url = fetch_url

    def place_call(self, to: str, variables: dict[str, str], *, campaign_id: str | None = None,
                   leave_voicemail: bool = True) -> str:
        # VoIPBin's amd hangs up on a machine either way: it says nothing of what answered otherwise.
        body: dict[str, Any] = {
            "source": {"type": "tel", "target": self.caller_id},
            "destinations": [{"type": "tel", "target": to}],
            "actions": [{"type": "amd", "option": {"machine_handle": "hangup"}},
                        {"type": "fetch", "option": {"event_url": self.fetch_url, "event_method": "POST"}}],
        }
        if variables:
            body["variables"] = dict(variables)
        answer = self.client.request("POST", "/calls", body, deadline=Deadline(PLACE_SECONDS))
        calls = answer.get("calls") if isinstance(answer, dict) else None
        call_id = calls[0].get("id") if isinstance(calls, list) and calls and isinstance(calls[0], dict) else None
        if not isinstance(call_id, str) or not call_id:
            raise VoipbinError("POST /calls: the answer names no call")
        # Its flow is voicebot's fetch loop: hang-up and hand-off go through it, as for a call handed over.
        channel: VoipbinChannel = {"by_fetch": True}
        self.conversation.open_outbound(call_id, to, self.caller_id, variables, channel=dict(channel),
                                        campaign_id=campaign_id)
        return call_id

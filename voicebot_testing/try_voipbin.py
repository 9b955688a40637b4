"""``voicebot try voipbin``: a VoIPBin call, on this machine, with nothing to copy.

A fake VoIPBin and a voicebot wired to it run in this process. A signed
call is answered, each line you type arrives as the caller's transcript, and
what voicebot says into the call (through VoIPBin's speaking session) is
printed, with the hang-up when the bot makes one. (No transfer here: VoIPBin
hands a call to a person through its ``fetch`` flow action, which this trial
does not run; "a human, please" is answered in words.) Ctrl-D or ``/hangup``
hangs up. It uses ANTHROPIC_API_KEY when set, the offline
responder otherwise.
"""

from __future__ import annotations

import os
import sys
from typing import Any, TextIO

from .fake_voipbin import FakeVoipbin, go_json, transcript_event_data
from voicebot.runtime import runtime_of
from voicebot.voipbin.signing import HEADER, sign

NUMBER = "+15559870000"


def run(lines: TextIO | None = None, out: TextIO | None = None) -> int:
    from voicebot import create_app

    lines = sys.stdin if lines is None else lines  # read at the call: a test or a pipe may have replaced them
    out = sys.stdout if out is None else out

    with FakeVoipbin(access_key="try-access-key") as voipbin:
        app = create_app({
            "VOIPBIN_WEBHOOK_SECRET": voipbin.webhook_secret, "VOIPBIN_ACCESS_KEY": voipbin.access_key,
            "VOIPBIN_API_URL": voipbin.api_url, "VOIPBIN_NUMBERS": (NUMBER,), "REDIS_URL": "",
            "LOG_LEVEL": os.environ.get("LOG_LEVEL", "WARNING"),
        })
        # The fake plays no audio: nothing to wait for before a hang-up.
        runtime_of(app).platforms["voipbin"].speech.speech_rate = 1e9
        client = app.test_client()

        def send(event_type: str, data: dict[str, Any]) -> dict[str, Any]:
            body = go_json({"type": event_type, "data": data})
            answer = client.post("/webhook/voipbin", data=body,
                                 headers={HEADER: sign(body, voipbin.webhook_secret),
                                          "Content-Type": "application/json"})
            return answer.get_json() or {}

        heard = 0

        def show_speech() -> None:
            nonlocal heard
            said = voipbin.said.get(call_id, [])
            for text in said[heard:]:
                print(f"voicebot says into the call: {text}", file=out, flush=True)
            heard = len(said)

        call_id = voipbin.answer_call(caller="+15551234567", callee=NUMBER)
        print(f"[VoIPBin] incoming call {call_id} to {NUMBER}, answered; signed events go to voicebot",
              file=out, flush=True)
        send("call_progressing", voipbin.calls[call_id])
        show_speech()
        prompt = lines.isatty()
        while True:
            if prompt:
                print("caller: ", end="", file=out, flush=True)
            text = lines.readline()
            if not text or text.strip() == "/hangup":
                break
            if not text.strip():
                continue
            transcribe_id = voipbin.transcribe_of(call_id)
            if transcribe_id is None:
                print("[VoIPBin] nobody is listening on this call any more", file=out, flush=True)
                break
            send("transcript_created", transcript_event_data(transcribe_id, text.strip()))
            show_speech()
            if call_id in voipbin.hung_up_by_api:
                print("[VoIPBin] voicebot hung up the call", file=out, flush=True)
                return 0
            if not voipbin.live("transcribes", call_id):
                channel = runtime_of(app).platforms["voipbin"].conversation.channel(call_id) or {}
                print(f"[VoIPBin] voicebot hands the caller to {channel.get('transferred_to', 'a person')} "
                      "(a connect action at the flow's next fetch)", file=out, flush=True)
                return 0
        send("call_hangup", voipbin.hang_up(call_id))
        print("[VoIPBin] the caller hung up", file=out, flush=True)
    return 0

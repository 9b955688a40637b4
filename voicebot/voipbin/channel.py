"""What voicebot keeps of a VoIPBin call, saved with its session as the call's channel."""

from __future__ import annotations

from typing import Any, TypedDict, cast

from ..session import Channel


class VoipbinChannel(TypedDict, total=False):
    """A VoIPBin call's state, as the bridge and its speaker read and write it (JSON in the store)."""

    by_fetch: bool               # handed to voicebot by the fetch flow action (it owns the flow: hang-up, hand-off)
    answered: bool               # call_progressing came
    number: str                  # the number called: the caller id of a transfer's outgoing leg
    transcribe_id: str           # the caller's transcription
    speaking_id: str             # the speaking session the bot talks through
    speaking_until: float        # epoch seconds: when what was said is estimated to have been heard
    actions: list[dict[str, Any]]  # flow actions for the next fetch (a connect, a hang-up)
    transferred_to: str          # the bot handed the caller to this number
    hanging_up: bool             # the bot ended the call


def voipbin_channel(channel: Channel) -> VoipbinChannel:
    """The core's untyped channel, read as VoIPBin's (the same dict: changes are saved with the session)."""
    return cast(VoipbinChannel, channel)

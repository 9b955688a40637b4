"""Twilio: a <Gather input="speech"> loop over signed, form-encoded webhooks (placeholder until its views land)."""

from ..platform import Platform


def init_app(app, conversation_of) -> None:
    return None


PLATFORM = Platform("twilio", init_app)

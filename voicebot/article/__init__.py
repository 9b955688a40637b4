"""The article's webhook contract: ``/webhook/call-started`` and ``/webhook/transcript``, reply in the response."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..platform import ConversationFactory, Platform

if TYPE_CHECKING:
    from flask import Flask


NAME = "article"  # the platform's name: its namespace in the store, its records' "platform"


def init_app(app: "Flask", conversation: ConversationFactory) -> None:
    from .views import bp

    conversation()
    app.register_blueprint(bp)


PLATFORM = Platform(NAME, init_app)

"""voicebot as the "custom LLM" of a voice front end: Chat Completions, streamed, in three dialects.

Vapi, ElevenLabs Agents, Telnyx AI Assistants, Pipecat and LiveKit Agents own the phone line, speech and
turn-taking, and ask an OpenAI-compatible server for each reply. Each dialect (``dialects``) is a platform
of its own (its calls in their own namespace, its records saying its name), served by one view:
``/openai/v1`` (any OpenAI client), ``/vapi`` and ``/elevenlabs``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping

from ..platform import ConversationFactory, Platform
from . import settings
from .dialects import ELEVENLABS, GENERIC, VAPI, Dialect

if TYPE_CHECKING:
    from flask import Blueprint, Flask


def _init_for(dialect: Dialect, *extra: str) -> Callable[["Flask", ConversationFactory], None]:
    """The dialect's ``init_app``: its endpoint, and ``extra``, the names of its end-of-call blueprints."""
    def init_app(app: "Flask", conversation: ConversationFactory) -> None:
        from . import event_views
        from .views import blueprint

        # Front ends never reuse a call's id: an ended call stays ended, and a late request is told so.
        conversation(ends_for_good=True)
        app.register_blueprint(blueprint(dialect))
        for name in extra:
            bp: "Blueprint" = getattr(event_views, name)
            app.register_blueprint(bp)
    return init_app


def _gives_variables(config: Mapping[str, Any]) -> bool:
    return bool(config["COMPLETIONS_TOKEN"])  # a front end's metadata (Vapi's variableValues, ElevenLabs' ...)


COMPLETIONS = Platform(GENERIC.name, _init_for(GENERIC), settings=settings.SETTINGS,
                       gives_variables=_gives_variables)
VAPI_PLATFORM = Platform(VAPI.name, _init_for(VAPI, "vapi_bp"), gives_variables=_gives_variables)
ELEVENLABS_PLATFORM = Platform(ELEVENLABS.name, _init_for(ELEVENLABS, "elevenlabs_bp"),
                               gives_variables=_gives_variables)
PLATFORMS = (COMPLETIONS, VAPI_PLATFORM, ELEVENLABS_PLATFORM)

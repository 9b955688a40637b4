"""What a platform brings to voicebot, and the one thing voicebot gives it back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:
    from flask import Flask

    from .checks import Found
    from .config import Setting
    from .conversation import Conversation

# Builds the platform's Conversation, in its own namespace (the platform's name): one call id can never
# reach another platform's call. ``ends_for_good`` and ``ended_calls_kept`` (see ``Conversation``): for a
# platform whose call ids are never reused, an ended call stays ended.
ConversationFactory = Callable[..., "Conversation"]


def _no_check(settings: Mapping[str, Any]) -> None:
    return None


def _nothing_to_reach(settings: Mapping[str, Any]) -> "Found | None":
    return None


def _no_variables(settings: Mapping[str, Any]) -> bool:
    return False


@dataclass(frozen=True)
class Platform:
    """A webhook contract voicebot speaks, as ``voicebot.platforms`` lists it.

    ``init_app`` registers the platform's blueprint (and whatever it needs,
    in the app's ``Runtime``) the way flaskr's ``db.init_app(app)`` does; it
    logs why it stays off when its settings say so. ``settings`` join the one
    registry and the README's table; ``check`` refuses their bad combinations
    at start-up. ``reach`` is what ``voicebot serve --check-config --connect``
    asks of the platform's own API, if anything (``voicebot.checks``).
    ``gives_variables``: with these settings, the platform's calls arrive
    with variables of their own (the prompt's placeholders have a source).
    """

    name: str
    init_app: Callable[["Flask", ConversationFactory], None]
    settings: tuple["Setting", ...] = ()
    check: Callable[[Mapping[str, Any]], None] = field(default=_no_check)
    reach: Callable[[Mapping[str, Any]], "Found | None"] = field(default=_nothing_to_reach)
    gives_variables: Callable[[Mapping[str, Any]], bool] = field(default=_no_variables)

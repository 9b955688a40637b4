"""The platforms voicebot speaks, in one list: the only module that names them (and the core features whose
settings are checked at start-up beside theirs).

A new platform is one package exposing ``PLATFORM`` (see ``voicebot.platform``),
its tests, and one entry here.
"""

from __future__ import annotations

from typing import Any, Mapping

from . import article, completions, config, context, operator_tools, outbound, retell, telnyx, twilio, voipbin
from .platform import Platform
from .records import plan as analysis_plan
from .stores import settings as store_settings

# outbound comes last: its endpoint uses the diallers the platforms before it registered.
PLATFORMS: tuple[Platform, ...] = (article.PLATFORM, voipbin.PLATFORM, twilio.PLATFORM, *completions.PLATFORMS,
                                   retell.PLATFORM, telnyx.PLATFORM, outbound.PLATFORM)

# The one registry: the store's, the core's, then each platform's (the README's table in this order).
SETTINGS: tuple[config.Setting, ...] = (store_settings.SETTINGS + config.SETTINGS
                                        + tuple(s for p in PLATFORMS for s in p.settings))
DEFAULTS: dict[str, Any] = {s.name: s.default for s in SETTINGS}

# Each feature of the core checks its own settings at start-up; the registry (voicebot.config) knows none of them.
FEATURE_CHECKS: tuple[config.Check, ...] = (operator_tools.check_settings, context.check_settings,
                                            analysis_plan.check_settings)


def _placeholders(settings: Mapping[str, Any]) -> None:
    config.check_placeholders(settings, [p.name for p in PLATFORMS if p.gives_variables(settings)])


def load_config(environ: Mapping[str, str] | None = None,
                overlay: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every setting of the core and the platforms, from the environment, checked."""
    return config.load(environ, overlay, registry=SETTINGS,
                       checks=[*FEATURE_CHECKS, _placeholders, *(p.check for p in PLATFORMS)])


def markdown_table() -> str:
    return config.markdown_table(SETTINGS)


def env_example() -> str:
    return config.env_example(SETTINGS)

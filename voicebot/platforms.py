"""The platforms voicebot speaks, in one list: the only module that names them.

A new platform is one package exposing ``PLATFORM`` (see ``voicebot.platform``),
its tests, and one entry here.
"""

from __future__ import annotations

from typing import Any, Mapping

from . import article, config, outbound, twilio, voipbin
from .platform import Platform

# outbound comes last: its endpoint uses the diallers the platforms before it registered.
PLATFORMS: tuple[Platform, ...] = (article.PLATFORM, voipbin.PLATFORM, twilio.PLATFORM, outbound.PLATFORM)

SETTINGS: tuple[config.Setting, ...] = config.SETTINGS + tuple(s for p in PLATFORMS for s in p.settings)


def load_config(environ: Mapping[str, str] | None = None,
                overlay: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every setting of the core and the platforms, from the environment, checked."""
    return config.load(environ, overlay, registry=SETTINGS, checks=[p.check for p in PLATFORMS])


def markdown_table() -> str:
    return config.markdown_table(SETTINGS)


def env_example() -> str:
    return config.env_example(SETTINGS)

"""What every command module shares: the help formatter and the way a command is added."""

from __future__ import annotations

import argparse
from typing import Callable

# Adds one command to `voicebot`: (name, help, description) -> its parser.
Command = Callable[..., argparse.ArgumentParser]


class Help(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default in --help (only where it has one worth showing)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text: str = action.help or ""
        if (action.default is None or action.default is False or action.default in ("", argparse.SUPPRESS)
                or "%(default)" in text or "default:" in text):
            return text
        return super()._get_help_string(action) or text

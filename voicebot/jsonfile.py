"""The JSON file a setting names (TOOLS_FILE, ANALYSIS_FILE), read once at start-up."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .exceptions import ConfigError


def read_json_file(setting: str, path: str) -> Any:
    """The JSON in ``path``; a ConfigError naming ``setting`` and saying why it cannot be used."""
    try:
        return json.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"{setting}={path!r} cannot be read: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigError(f"{setting}={path!r} is not valid JSON: {exc}") from None

"""``{{name}}`` placeholders in the greeting and the system prompt, filled from a call's variables.

``{{name|words}}`` gives a default, said when the call has no value for
``name``. A template whose every placeholder has a default can be used for
any call; one with a bare ``{{name}}`` needs a value for it, and a call that
lacks one is refused when it is submitted (``missing``), never found out
mid-call.
"""

from __future__ import annotations

import re
from typing import Mapping

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]{0,63})\s*(?:\|([^{}]*))?\}\}")
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
# A call's variables: at most this many, each value at most this long (they go into every prompt).
MAX_VARIABLES = 50
MAX_VALUE_CHARS = 500


def names(template: str) -> set[str]:
    """Every placeholder's name in ``template``."""
    return {match.group(1) for match in PLACEHOLDER.finditer(template)}


def required(template: str) -> set[str]:
    """The placeholders with no default: a call must give each a value."""
    return {match.group(1) for match in PLACEHOLDER.finditer(template) if match.group(2) is None}


def missing(template: str, variables: Mapping[str, str]) -> list[str]:
    """The names ``template`` needs that ``variables`` lacks (or leaves empty), sorted."""
    return sorted(name for name in required(template) if not variables.get(name, "").strip())


def fill(template: str, variables: Mapping[str, str]) -> str:
    """``template`` with each placeholder replaced by its value, or its default ("" for none)."""
    if "{{" not in template:
        return template

    def value(match: re.Match[str]) -> str:
        given = variables.get(match.group(1), "").strip()
        return given or (match.group(2) or "").strip()

    return PLACEHOLDER.sub(value, template)


def clean_variables(raw: object, where: str) -> dict[str, str]:
    """Variables as a caller of voicebot gives them (JSON): names checked, values as text, sizes bounded.

    Raises ValueError naming what is wrong, for the caller to report.
    """
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ValueError(f"{where} must be an object of names to values")
    if len(raw) > MAX_VARIABLES:
        raise ValueError(f"{where} has more than {MAX_VARIABLES} variables")
    variables: dict[str, str] = {}
    for name, value in raw.items():
        if not isinstance(name, str) or not NAME.match(name):
            raise ValueError(f"{where}: {str(name)[:70]!r} is not a variable name (letters, digits and _)")
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ValueError(f"{where}.{name} must be text or a number")
        text = str(value).strip()
        if len(text) > MAX_VALUE_CHARS:
            raise ValueError(f"{where}.{name} is longer than {MAX_VALUE_CHARS} characters")
        if "{{" in text or "}}" in text:
            raise ValueError(f"{where}.{name} may not hold {{{{ or }}}}")
        variables[name] = text
    return variables

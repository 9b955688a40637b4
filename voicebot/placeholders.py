"""``{{name}}`` placeholders in the greeting and the system prompt, filled from a call's variables.

``{{name|words}}`` gives a default, said when the call has no value for
``name``. A bare ``{{name}}`` with no value for a call is left out, and the
space before it with it where punctuation, a space or the end follows
("Hello {{name}}!" is "Hello!").
"""

from __future__ import annotations

import re
from typing import Iterable, Mapping

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]{0,63})\s*(?:\|([^{}]*))?\}\}")
# A placeholder with the spaces before it, and whether punctuation or the end follows: for leaving it out.
_SPACED = re.compile(r"([ \t]*)" + PLACEHOLDER.pattern + r"(?=([ \t,.!?;:)]|$)?)", re.M)
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
# A call's variables: at most this many, each value at most this long (they go into every prompt).
MAX_VARIABLES = 50
MAX_VALUE_CHARS = 500


def names(template: str) -> set[str]:
    """Every placeholder's name in ``template``."""
    return {match.group(1) for match in PLACEHOLDER.finditer(template)}


def required(template: str) -> set[str]:
    """The placeholders with no default."""
    return {match.group(1) for match in PLACEHOLDER.finditer(template) if match.group(2) is None}


def missing(templates: Iterable[str], variables: Mapping[str, str]) -> list[str]:
    """The names ``templates`` need without a default that ``variables`` leaves empty, sorted: an outbound
    call is refused for them when it is submitted, not found out mid-call."""
    return sorted({name for template in templates for name in required(template)
                   if not variables.get(name, "").strip()})


def fill(template: str, variables: Mapping[str, str]) -> str:
    """``template`` with each placeholder replaced by its value, or its default ("" for none)."""
    if "{{" not in template:
        return template

    def value(match: re.Match[str]) -> str:
        spaces, name, default, closing = match.group(1), match.group(2), match.group(3), match.group(4)
        given = variables.get(name, "").strip() or (default or "").strip()
        if given:
            return spaces + given
        # Nothing to say: the words around it close up ("Hello {{name}}, hi" is "Hello, hi").
        return "" if closing is not None or match.end() == len(template) else spaces

    return _SPACED.sub(value, template)


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

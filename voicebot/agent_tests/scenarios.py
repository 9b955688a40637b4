"""A ``voicebot test`` file: the scenarios an agent must pass, read and checked before any runs.

YAML (or JSON, which YAML reads too)::

    scenarios:
      - name: hangs up after goodbye
        caller: ["Hello, my order is 1234.", "That is all, goodbye."]   # scripted caller lines
        variables: {name: Ana}                                          # as a campaign contact's
        expect:
          action: hangup            # hangup | transfer | none (the call's last action)
          says: ["1234"]            # each must appear in some reply (case-insensitive)
          never_says: ["refund"]    # none may appear in any reply
          tools: [lookup_order]     # operator tools that must have been called
          max_turns: 4
          judge: "The agent confirmed the order number before ending the call."
        repeat: 4
      - name: impatient caller wants a date
        persona: "An impatient customer whose order 1234 is late."      # a simulated caller (a model plays it)
        goal: "Get a delivery date, or a person."
        max_turns: 8
        expect: {judge: "The agent gave a date or handed the call to a person, and stayed polite."}

A mistake is a ``ScenarioError`` naming the scenario and the field, one line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..placeholders import clean_variables

ACTIONS = ("hangup", "transfer", "none")
EXPECTATIONS = ("action", "says", "never_says", "tools", "max_turns", "judge")
FIELDS = ("name", "caller", "persona", "goal", "variables", "expect", "repeat", "max_turns")
MAX_REPEAT = 100
MAX_TURNS = 50


class ScenarioError(ValueError):
    """A test file that cannot be run as written: which scenario, which field, and why."""


@dataclass(frozen=True)
class Expect:
    """What a run must show. Every check but ``judge`` is deterministic and never left to a model."""

    action: str | None = None
    says: tuple[str, ...] = ()
    never_says: tuple[str, ...] = ()
    tools: tuple[str, ...] = ()
    max_turns: int | None = None
    judge: str = ""


@dataclass(frozen=True)
class Scenario:
    """One scenario: scripted caller lines, or a simulated caller (``persona`` and ``goal``) for up to
    ``max_turns`` turns; run ``repeat`` times, each run a call of its own."""

    name: str
    caller: tuple[str, ...] = ()
    persona: str = ""
    goal: str = ""
    variables: dict[str, str] = field(default_factory=dict)
    expect: Expect = field(default_factory=Expect)
    repeat: int = 1
    max_turns: int = 8

    @property
    def simulated(self) -> bool:
        return not self.caller


def load(path: str, repeat: int | None = None) -> list[Scenario]:
    """The scenarios of ``path``; ``repeat`` overrides each one's own."""
    try:
        document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(f"{path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ScenarioError(f"{path}: not YAML or JSON{where}") from None
    items = document.get("scenarios") if isinstance(document, dict) else None
    if not isinstance(items, list) or not items:
        raise ScenarioError(f"{path}: give 'scenarios', a list of at least one scenario")
    scenarios = [_scenario(item, n, path) for n, item in enumerate(items, start=1)]
    names = [s.name for s in scenarios]
    twice = next((name for name in names if names.count(name) > 1), None)
    if twice is not None:
        raise ScenarioError(f"{path}: scenario {twice!r}: 'name' is given to two scenarios")
    if repeat is not None:
        scenarios = [Scenario(**{**s.__dict__, "repeat": repeat}) for s in scenarios]
    return scenarios


def _scenario(item: Any, number: int, path: str) -> Scenario:
    if not isinstance(item, dict):
        raise ScenarioError(f"{path}: scenario {number}: must be a mapping of fields")
    name = item.get("name")
    label = f"{path}: scenario {name!r}" if isinstance(name, str) and name.strip() else f"{path}: scenario {number}"

    def wrong(field_name: str, why: str) -> ScenarioError:
        return ScenarioError(f"{label}: '{field_name}' {why}")

    if not isinstance(name, str) or not name.strip():
        raise wrong("name", "must be given, as text")
    for key in item:
        if key not in FIELDS:
            raise wrong(key, f"is not a field of a scenario ({', '.join(FIELDS)})")
    caller = item.get("caller", [])
    if not isinstance(caller, list) or not all(isinstance(line, str) and line.strip() for line in caller):
        raise wrong("caller", "must be a list of the caller's lines, as text")
    persona, goal = item.get("persona", ""), item.get("goal", "")
    if not isinstance(persona, str) or not isinstance(goal, str):
        raise wrong("persona" if not isinstance(persona, str) else "goal", "must be text")
    if caller and (persona or goal):
        raise wrong("persona", "goes with a simulated caller: give 'caller' lines or a 'persona', not both")
    if not caller and not persona.strip():
        raise wrong("caller", "or 'persona' must be given: scripted lines, or a caller a model plays")
    try:
        variables = clean_variables(item.get("variables"), "variables")
    except ValueError as exc:
        raise wrong("variables", str(exc).removeprefix("variables ").removeprefix("'variables' ")) from None
    repeat = _count(item.get("repeat", 1), MAX_REPEAT, lambda why: wrong("repeat", why))
    max_turns = _count(item.get("max_turns", 8), MAX_TURNS, lambda why: wrong("max_turns", why))
    return Scenario(name.strip(), tuple(line.strip() for line in caller), persona.strip(), goal.strip(),
                    variables, _expect(item.get("expect", {}), wrong), repeat, max_turns)


def _expect(raw: Any, wrong: Any) -> Expect:
    if not isinstance(raw, dict):
        raise wrong("expect", "must be a mapping of expectations")
    for key in raw:
        if key not in EXPECTATIONS:
            raise wrong(f"expect.{key}", f"is not an expectation ({', '.join(EXPECTATIONS)})")
    action = raw.get("action")
    if action is not None and action not in ACTIONS:
        raise wrong("expect.action", f"must be one of {', '.join(ACTIONS)}")
    lists = {}
    for key in ("says", "never_says", "tools"):
        value = raw.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise wrong(f"expect.{key}", "must be a list of text")
        lists[key] = tuple(v.strip() for v in value)
    judge = raw.get("judge", "")
    if not isinstance(judge, str):
        raise wrong("expect.judge", "must be text: what a good call does")
    turns = raw.get("max_turns")
    max_turns = None if turns is None else _count(turns, MAX_TURNS, lambda why: wrong("expect.max_turns", why))
    return Expect(action, lists["says"], lists["never_says"], lists["tools"], max_turns, judge.strip())


def _count(value: Any, most: int, wrong: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise wrong(f"must be a whole number from 1 to {most}")
    return value

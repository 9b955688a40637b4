"""The post-call analysis plan: what ANALYSIS_FILE asks of every record, checked at start-up.

Kept apart from the analysis itself (``voicebot.records.analysis``), so that
checking the settings imports no metrics, no model and no store: gunicorn's
master checks them before any worker has set up its metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from ..exceptions import ConfigError
from ..jsonfile import read_json_file
from ..tools import Tool
from . import analysis_schema

TOOL_NAME = "record_call_analysis"
# What each success scale asks of the model, as JSON schema.
SCALES: dict[str, dict[str, Any]] = {
    "pass_fail": {"type": "boolean", "description": "true: the call met the criteria; false: it did not"},
    "1-10": {"type": "integer", "minimum": 1, "maximum": 10, "description": "1 (not at all) to 10 (fully)"},
    "1-5": {"type": "integer", "minimum": 1, "maximum": 5, "description": "1 (not at all) to 5 (fully)"},
    "likert": {"type": "string", "enum": ["strongly disagree", "disagree", "neutral", "agree", "strongly agree"],
               "description": "how far the call met the criteria"},
}


@dataclass(frozen=True)
class AnalysisPlan:
    """What each record's analysis holds, as ANALYSIS_FILE declares it."""

    summary: bool
    data: dict[str, Any] | None  # a JSON schema of an object, written by the operator
    scale: str | None  # one of SCALES
    criteria: str

    def tool(self) -> Tool:
        """The one tool the model is made to use: its input is the analysis."""
        properties: dict[str, Any] = {}
        if self.summary:
            properties["summary"] = {"type": "string", "description": "what happened on the call, in a few "
                                                                      "sentences"}
        if self.data is not None:
            properties["data"] = self.data
        if self.scale is not None:
            properties["success"] = {**SCALES[self.scale], "description": (
                f"{SCALES[self.scale]['description']}. Criteria: {self.criteria}")}
        schema = {"type": "object", "properties": properties, "required": sorted(properties)}
        return Tool(TOOL_NAME, "Record the analysis of the call.", schema)

    def columns(self) -> list[str]:
        """The structured data's fields, in the schema's order: one CSV column each."""
        return list((self.data or {}).get("properties", {}))


def check_settings(settings: Mapping[str, Any]) -> None:
    """ANALYSIS_FILE must hold a plan that can be asked of the model and validated safely."""
    if settings["ANALYSIS_FILE"]:
        load_plan(settings["ANALYSIS_FILE"])


def load_plan(path: str) -> AnalysisPlan:
    """The plan in ``path``; a ConfigError listing every mistake, one line each, otherwise."""
    where = f"ANALYSIS_FILE={path!r}"
    declared = read_json_file("ANALYSIS_FILE", path)
    if not isinstance(declared, dict):
        raise ConfigError(f'{where} must be a JSON object such as {{"summary": true}}')
    mistakes = [f"{where}: {name!r} is not a part of a plan (summary, data, success)"
                for name in declared if name not in ("summary", "data", "success")]
    summary = declared.get("summary", False)
    if not isinstance(summary, bool):
        mistakes.append(f"{where}: summary must be true or false")
    data = declared.get("data")
    if data is not None:
        if not isinstance(data, dict) or data.get("type") != "object":
            mistakes.append(f'{where}: data must be a JSON schema with "type": "object"')
        else:
            try:
                Draft202012Validator.check_schema(data)
            except SchemaError as exc:
                mistakes.append(f"{where}: data is not a valid JSON schema: {exc.message}")
            else:
                mistakes.extend(f"{where}: {problem}" for problem in analysis_schema.problems(data))
    success = declared.get("success")
    scale, criteria = None, ""
    if success is not None:
        if not isinstance(success, dict):
            mistakes.append(f'{where}: success must be {{"scale": ..., "criteria": "..."}}')
        else:
            scale = success.get("scale")
            criteria = success.get("criteria", "")
            if scale not in SCALES:
                mistakes.append(f"{where}: success.scale must be one of {', '.join(SCALES)}")
            if not isinstance(criteria, str) or not criteria.strip():
                mistakes.append(f"{where}: success.criteria must say what a successful call is")
    if not mistakes and not (summary or data or success):
        mistakes.append(f"{where} asks for nothing: set summary, data or success")
    if mistakes:
        raise ConfigError("\n".join(mistakes))
    return AnalysisPlan(bool(summary), data, scale if isinstance(scale, str) else None, str(criteria).strip())

"""Records as CSV, one row per call, for a spreadsheet: the call's facts, its variables and its analysis.

The analysis's structured data has a column per field, named as the field
(``data.<field>`` where a field's name is already a column's); variables are
``var.<name>``. Nested values (a list, an object) are written as JSON in their
cell; true and false as ``true`` and ``false``; nothing as an empty cell.

Every CSV voicebot writes goes through ``csv_writer``: a cell a spreadsheet
would run as a formula (one that begins with ``=``, ``+``, ``-``, ``@``, a
tab or a carriage return: a caller's number, a summary the caller dictated,
a contact's field saying ``=HYPERLINK(...)``) is written with a leading
``'``, as OWASP's CSV-injection advice says, so it is shown as text. A
plain number (``-3``, ``+15551234567``) is no formula and is left as it is.
"""

from __future__ import annotations

import csv
import json
import re
from typing import Any, Iterable, Protocol, TextIO

FACTS = ["id", "call_id", "platform", "direction", "caller", "called", "started_at", "ended_at",
         "duration_seconds", "end_reason", "turns", "fallbacks"]
ANALYSIS = ["analysis_error", "summary", "success"]

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
NUMBER = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")


class RowWriter(Protocol):
    """What writes one CSV row (csv's writer, formula-safe)."""

    def writerow(self, row: Iterable[Any]) -> Any: ...


class _FormulaSafeWriter:
    """csv's writer, each cell first made safe to open in a spreadsheet."""

    def __init__(self, out: TextIO) -> None:
        self._writer = csv.writer(out)

    def writerow(self, row: Iterable[Any]) -> Any:
        return self._writer.writerow([safe_cell(cell) for cell in row])


def csv_writer(out: TextIO) -> RowWriter:
    """The writer for every CSV voicebot writes (exports, campaign results): csv's, formula-safe."""
    return _FormulaSafeWriter(out)


def safe_cell(value: Any) -> Any:
    """A cell a spreadsheet shows as text: a leading ``'`` on what it would read as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_START) and not NUMBER.fullmatch(value):
        return "'" + value
    return value


def write_csv(records: Iterable[dict[str, Any]], out: TextIO, data_columns: list[str] | None = None) -> int:
    """Write ``records`` to ``out``; the number of rows. ``data_columns``: the analysis plan's fields (in its
    schema's order); without it, every field any record's structured data has, in the order first seen."""
    rows = list(records)
    variables = _in_order(name for record in rows for name in record.get("variables") or {})
    if data_columns is None:
        data_columns = _in_order(name for record in rows for name in _data(record))
    writer = csv_writer(out)
    taken = {*FACTS, *ANALYSIS}
    writer.writerow([*FACTS, *(f"var.{name}" for name in variables), *ANALYSIS,
                     *(f"data.{name}" if name in taken else name for name in data_columns)])
    for record in rows:
        analysis = record.get("analysis") or {}
        own = record.get("variables") or {}
        data = _data(record)
        writer.writerow([*(_cell(record.get(name)) for name in FACTS), *(_cell(own.get(n)) for n in variables),
                         _cell(record.get("analysis_error")), _cell(analysis.get("summary")),
                         _cell(analysis.get("success")), *(_cell(data.get(name)) for name in data_columns)])
    return len(rows)


def _data(record: dict[str, Any]) -> dict[str, Any]:
    data = (record.get("analysis") or {}).get("data")
    return data if isinstance(data, dict) else {}


def _in_order(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(names))


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return str(value)

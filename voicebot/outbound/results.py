"""What ``voicebot campaign status`` and ``results`` print."""

from __future__ import annotations

from typing import Any, TextIO

from ..records.spreadsheet import csv_writer

BAR = 30


def progress_line(status: dict[str, Any], *, bar: bool) -> str:
    """One line: done of all (a bar on a terminal), live calls, outcomes so far, the campaign's state."""
    total, done = int(status["contacts"]), int(status["done"])
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(status.get("outcomes", {}).items())) or "no outcome yet"
    filled = BAR * done // total if total else BAR
    shown = f"[{'#' * filled}{'.' * (BAR - filled)}] " if bar else ""
    return (f"{shown}{done}/{total} done, {status['live']} live, {status['pending']} to dial; {outcomes} "
            f"({status['state']})")


def write_results(rows: list[dict[str, Any]], out: TextIO) -> int:
    """One CSV row per contact: phone, outcome, attempts, duration, record id, call id, var.<name> columns."""
    names = list(dict.fromkeys(name for row in rows for name in row.get("variables") or {}))
    writer = csv_writer(out)
    writer.writerow(["phone", "outcome", "final", "attempts", "duration_seconds", "record_id", "call_id",
                     *(f"var.{name}" for name in names)])
    for row in rows:
        variables = row.get("variables") or {}
        writer.writerow([row["phone"], row.get("outcome") or "", "true" if row.get("final") else "false",
                         row.get("attempts", 0), "" if row.get("duration_seconds") is None else row["duration_seconds"],
                         row.get("record_id") or "", row.get("call_id") or "",
                         *(variables.get(name, "") for name in names)])
    return len(rows)

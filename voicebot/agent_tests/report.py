"""What ``voicebot test`` shows: a line per run as it finishes, a table, each failure with its reason, JUnit."""

from __future__ import annotations

import statistics
import xml.etree.ElementTree as ET
from typing import TextIO

from .runner import Run


def run_line(run: Run) -> str:
    mark = "PASS" if run.passed else ("ERROR" if run.errors else "FAIL")
    return f"{mark:5} {run.name} ({len(run.latencies)} turns, {run.seconds:.1f} s)"


def table(runs: list[Run], out: TextIO) -> None:
    """The scenarios in the order they were given: runs, passed, median turn latency, the test's tokens."""
    names = list(dict.fromkeys(run.scenario for run in runs))
    rows = [("scenario", "runs", "passed", "median turn", "tokens (caller, judge)")]
    for name in names:
        mine = [run for run in runs if run.scenario == name]
        latencies = [seconds for run in mine for seconds in run.latencies]
        median = f"{statistics.median(latencies) * 1000:.0f} ms" if latencies else "-"
        rows.append((name, str(len(mine)), str(sum(run.passed for run in mine)), median,
                     str(sum(run.tokens for run in mine))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip(), file=out)
    for run in runs:
        for problem in run.errors + run.failures:
            print(f"  {run.name}: {problem}", file=out)


def junit(runs: list[Run], path: str) -> None:
    """One test case per run, named after its scenario; a failed expectation is a failure, an error an error."""
    suite = ET.Element("testsuite", name="voicebot test", tests=str(len(runs)),
                       failures=str(sum(bool(r.failures) and not r.errors for r in runs)),
                       errors=str(sum(bool(r.errors) for r in runs)),
                       time=f"{sum(r.seconds for r in runs):.3f}")
    for run in runs:
        case = ET.SubElement(suite, "testcase", classname="voicebot.test", name=run.name, time=f"{run.seconds:.3f}")
        if run.errors:
            ET.SubElement(case, "error", message=run.errors[0]).text = "\n".join(run.errors)
        elif run.failures:
            ET.SubElement(case, "failure", message=run.failures[0]).text = "\n".join(run.failures)
        transcript = "\n".join(f"{who}: {words}" for who, words in run.transcript)
        ET.SubElement(case, "system-out").text = transcript
    everything = ET.Element("testsuites")
    everything.append(suite)
    ET.ElementTree(everything).write(path, encoding="utf-8", xml_declaration=True)

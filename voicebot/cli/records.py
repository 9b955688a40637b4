"""``voicebot calls export``: the kept end-of-call records, as JSON lines or CSV."""

from __future__ import annotations

import argparse
import sys

from .base import Command, Help


def register(command: Command) -> None:
    """Add this module's commands to the voicebot command."""
    calls = command("calls", "end-of-call records").add_subparsers(
        dest="calls_command", metavar="COMMAND", required=True)
    export = calls.add_parser("export", formatter_class=Help,
                              help="write the kept end-of-call records as JSON lines (or CSV)",
                              description="Reads the records kept in Redis (REDIS_URL, REDIS_PREFIX) for "
                                          "CALL_RECORD_RETENTION_SECONDS and writes one JSON object per line; "
                                          "with --csv, one row per call for a spreadsheet, the analysis's "
                                          "structured data (ANALYSIS_FILE's schema) as columns.")
    export.add_argument("--since", type=since, default=0.0,
                        help="only records made since: 90m, 2h, 7d, 2026-11-24, 2026-11-24T08:00Z (default: all)")
    export.add_argument("--output", help="a file to write (default: standard output)")
    export.add_argument("--csv", "--analysis", dest="csv", action="store_true",
                        help="CSV, one row per call: its facts, var.<name> per variable, the analysis's summary "
                             "and success, and a column per field of ANALYSIS_FILE's schema")
    export.set_defaults(run=run_calls_export)


def since(text: str) -> float:
    """'90m', '2h', '7d', an ISO date or time (UTC unless it says), or epoch seconds."""
    import re
    import time
    from datetime import datetime, timezone

    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text.strip())
    if match:
        return time.time() - float(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give e.g. 2h, 7d, 2026-11-24 or 2026-11-24T08:00Z") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


def run_calls_export(args: argparse.Namespace) -> int:
    import json

    from ..exceptions import StoreError
    from ..platforms import load_config
    from ..records.outbox import build_outbox

    settings = load_config()  # a bad setting: main says which, in one line
    if not settings["REDIS_URL"]:
        print("voicebot: with the in-memory store, records live in the serving process only; set REDIS_URL "
              "(or CALL_REPORT_URL) to keep them where this command can read them", file=sys.stderr)
        return 2
    outbox = build_outbox(settings)
    columns = None
    if args.csv and settings["ANALYSIS_FILE"]:
        from ..records.plan import load_plan

        columns = load_plan(settings["ANALYSIS_FILE"]).columns()
    out = open(args.output, "w", newline="" if args.csv else None) if args.output else sys.stdout
    count = 0
    try:
        if args.csv:
            from ..records.spreadsheet import write_csv

            count = write_csv(outbox.export(args.since), out, columns)
        else:
            for record in outbox.export(args.since):
                out.write(json.dumps(record, separators=(",", ":")) + "\n")
                count += 1
    except StoreError as exc:
        print(f"voicebot: {exc}", file=sys.stderr)
        return 1
    finally:
        outbox.close()
        if args.output:
            out.close()
    print(f"{count} record(s)", file=sys.stderr)
    return 0

"""``voicebot call`` and ``voicebot campaign``: calls placed by a running voicebot, through its operator API."""

from __future__ import annotations

import argparse
import sys

from .base import Command, Help


def register(command: Command) -> None:
    """Add this module's commands to the voicebot command."""
    call = command("call", "place one call through a running voicebot (POST /calls)",
                   "Asks the voicebot at --url to call TO from OUTBOUND_NUMBER, with the variables its "
                   "OUTBOUND_GREETING and OUTBOUND_SYSTEM_PROMPT use; sends OUTBOUND_TOKEN (or WEBHOOK_TOKEN) "
                   "from the environment. Prints the call's id; its outcome comes in its record.")
    call.add_argument("to", help="the number to call, in E.164 form: +15551234567")
    call.add_argument("--var", action="append", default=[], metavar="NAME=VALUE",
                      help="a variable of the call, e.g. --var name=Ana --var slot='Tuesday 3 pm'")
    call.add_argument("--url", help="the running voicebot (default: http://127.0.0.1:$PORT)")
    call.add_argument("--platform", choices=("voipbin", "twilio"),
                      help="where to place it (default: the one configured, or OUTBOUND_PLATFORM)")
    call.set_defaults(run=run_call)

    campaign = command("campaign", "run a campaign of calls in the running voicebot: start, status, pause, "
                                   "resume, cancel, results").add_subparsers(
        dest="campaign_command", metavar="COMMAND", required=True)

    def campaign_command(name: str, help: str) -> argparse.ArgumentParser:
        sub = campaign.add_parser(name, help=help, description=help, formatter_class=Help)
        sub.add_argument("--url", help="the running voicebot (default: http://127.0.0.1:$PORT)")
        sub.set_defaults(run=run_campaign)
        return sub

    start = campaign_command("start", "start a campaign from a CSV file: a phone column, every other column a "
                                      "variable; prints the campaign's id")
    start.add_argument("contacts", help="the CSV file")
    start.add_argument("--concurrency", type=int, default=4, help="calls at once, across every instance")
    start.add_argument("--window", help="dial only between these times, e.g. 09:00-18:00 (default: any time)")
    start.add_argument("--timezone", default="UTC", help="the window's time zone, e.g. Europe/Paris")
    start.add_argument("--attempts", type=int, default=1, help="attempts per contact (busy, no answer, failed)")
    start.add_argument("--retry-gap", type=float, default=900.0, help="seconds between a contact's attempts")
    start.add_argument("--pace", type=float, default=1.0, help="dials a second at most, across every instance")
    start.add_argument("--platform", choices=("voipbin", "twilio"), help="where to place the calls")
    start.add_argument("--voicemail", choices=("message", "hangup"), default="message",
                       help="an answering machine is left VOICEMAIL_MESSAGE (Twilio), or hung up on at once")
    for name, help in (("status", "how far it is (a progress bar on a terminal)"), ("pause", "stop dialling"),
                       ("resume", "dial again"), ("cancel", "dial no more; live calls go on to their end"),
                       ("results", "one CSV row per contact: outcome, attempts, duration, record id, variables")):
        sub = campaign_command(name, help)
        sub.add_argument("id", help="the campaign's id")
        if name == "status":
            sub.add_argument("--json", action="store_true", help="the status as JSON, for scripts")
        if name == "results":
            sub.add_argument("--output", help="a file to write (default: standard output)")


def run_call(args: argparse.Namespace) -> int:
    """Ask a running voicebot to place one call (POST /calls); the call runs in the service, not here."""
    variables = {}
    for given in args.var:
        name, sep, value = given.partition("=")
        if not sep or not name:
            print(f"voicebot call: --var takes name=value; got {given!r}", file=sys.stderr)
            return 2
        variables[name] = value
    body: dict[str, object] = {"to": args.to, "variables": variables}
    if args.platform:
        body["platform"] = args.platform
    status, answer = _ask(args, "POST", "/calls", body)  # unreachable: main says so, in one line
    if status != 201:
        print(f"voicebot call: {answer.get('message') or answer.get('error') or status} (HTTP {status})",
              file=sys.stderr)
        return 1
    print(f"placed call {answer['call_id']} on {answer['platform']}; its outcome comes in its record")
    return 0


def _service(args: argparse.Namespace) -> tuple[str, dict[str, str]]:
    """The running voicebot a command talks to, and the token it sends."""
    import os

    url = (args.url or f"http://127.0.0.1:{os.environ.get('PORT', '8000')}").rstrip("/")
    token = os.environ.get("OUTBOUND_TOKEN") or os.environ.get("WEBHOOK_TOKEN", "")
    return url, ({"Authorization": f"Bearer {token}"} if token else {})


def _ask(args: argparse.Namespace, method: str, path: str, body: object = None) -> tuple[int, dict[str, object]]:
    import json

    from ..deadline import within
    from ..egress import HTTP, EgressError

    url, headers = _service(args)
    http = HTTP(headers={"Content-Type": "application/json", **headers})
    try:
        with within(60):
            answer = http.request(method, url + path, body=None if body is None else json.dumps(body).encode(),
                                  limit=64 * 1024 * 1024)
    except EgressError as exc:
        raise OSError(f"cannot reach {url}: {exc}") from None
    finally:
        http.close()
    try:
        return answer.status, answer.json()
    except ValueError:
        return answer.status, {"message": answer.body[:200].decode("utf-8", "replace")}


def run_campaign(args: argparse.Namespace) -> int:
    import csv
    import json

    command = args.campaign_command
    if command == "start":
        try:
            with open(args.contacts, newline="", encoding="utf-8-sig") as handle:
                rows = list(csv.DictReader(handle))
        except OSError as exc:
            print(f"voicebot campaign: {args.contacts}: {exc.strerror}", file=sys.stderr)
            return 2
        if not rows or "phone" not in rows[0]:
            print(f"voicebot campaign: {args.contacts} needs a 'phone' column (every other column is a variable)",
                  file=sys.stderr)
            return 2
        contacts = [{"phone": (row.pop("phone") or "").strip(),
                     "variables": {k: v for k, v in row.items() if k and v is not None}} for row in rows]
        body: dict[str, object] = {"contacts": contacts, "concurrency": args.concurrency, "attempts": args.attempts,
                                   "retry_gap": args.retry_gap, "pace": args.pace, "timezone": args.timezone}
        if args.window:
            body["window"] = args.window
        body["voicemail"] = args.voicemail
        if args.platform:
            body["platform"] = args.platform
        status, answer = _ask(args, "POST", "/campaigns", body)
        if status != 201:
            print(f"voicebot campaign: {answer.get('message') or answer} (HTTP {status})", file=sys.stderr)
            return 1
        print(answer["campaign_id"])
        return 0
    if command in ("pause", "resume", "cancel"):
        status, answer = _ask(args, "POST", f"/campaigns/{args.id}/{command}")
    elif command == "results":
        status, answer = _ask(args, "GET", f"/campaigns/{args.id}/results")
    else:
        status, answer = _ask(args, "GET", f"/campaigns/{args.id}")
    if status != 200:
        print(f"voicebot campaign: {answer.get('message') or answer} (HTTP {status})", file=sys.stderr)
        return 1
    if command == "results":
        from ..outbound.results import write_results

        out = open(args.output, "w", newline="") if args.output else sys.stdout
        try:
            count = write_results(answer["results"], out)  # type: ignore[arg-type]
        finally:
            if args.output:
                out.close()
        print(f"{count} contact(s); campaign {answer['state']}", file=sys.stderr)
        return 0
    if getattr(args, "json", False):
        print(json.dumps(answer))
    else:
        from ..outbound.results import progress_line

        print(progress_line(answer, bar=sys.stdout.isatty()))
    return 0

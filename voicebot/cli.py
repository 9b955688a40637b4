"""The voicebot command: serve the app under gunicorn, talk to it, try it, connect an account, check it."""

from __future__ import annotations

import argparse
import sys


def _serve(args: argparse.Namespace) -> int:
    from . import config
    from .exceptions import ConfigError
    from .platforms import load_config
    from .stores.settings import store_description

    # Before gunicorn is imported: it reads WEB_CONCURRENCY itself, as it loads,
    # and a bad value would end in its traceback instead of this one line.
    bind = _bind_of(args.extra) or f"127.0.0.1:{args.port or ''}"
    try:
        settings = load_config(overlay={"PORT": args.port} if args.port else None)
        workers = _workers_of(args.extra) or config.worker_count(settings)
        config.check_worker_model(settings, workers)
    except ConfigError as exc:
        print(f"voicebot refuses to start: {exc}", file=sys.stderr)
        return 2
    if bind.endswith(":"):
        bind += str(settings["PORT"])
    if args.check_config:
        print(f"configuration OK: {workers} worker(s), {store_description(settings)} sessions, "
              f"listening on {bind}")
        if not args.connect:
            return 0
        from .checks import connect_all
        from .platforms import PLATFORMS

        found = connect_all(settings, [p.reach for p in PLATFORMS])
        print("dependencies:\n" + "\n".join(f.line() for f in found))
        return 1 if any(f.ok is False for f in found) else 0
    busy = _busy(bind)
    if busy:
        print(f"voicebot cannot start: {busy}", file=sys.stderr)
        return 1
    if not settings["METRICS_TOKEN"] and not _loopback(bind):
        print(f"voicebot: METRICS_TOKEN is not set: on {bind}, /metrics answers only requests made on this "
              "machine; set it for a Prometheus elsewhere", file=sys.stderr)
    if args.port:
        args.extra = ["--bind", bind, *args.extra]
    from gunicorn.app.wsgiapp import run  # type: ignore[import-untyped]

    # The same settings as `gunicorn app:app` from the repository, but usable
    # from any folder once voicebot is installed.
    sys.argv = ["gunicorn", "--config", "python:voicebot.gunicorn_config", *args.extra,
                "voicebot:create_app()"]
    run()
    return 0


def _bind_of(extra: list[str]) -> str:
    for index, word in enumerate(extra):
        if word in ("--bind", "-b") and index + 1 < len(extra):
            return extra[index + 1]
        if word.startswith("--bind="):
            return word.split("=", 1)[1]
    return ""


def _workers_of(extra: list[str]) -> int:
    for index, word in enumerate(extra):
        if word in ("--workers", "-w") and index + 1 < len(extra) and extra[index + 1].isdigit():
            return int(extra[index + 1])
    return 0


def _loopback(bind: str) -> bool:
    """Whether ``bind`` listens on this machine only (a unix socket, 127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if bind.startswith("unix:"):
        return True
    host = bind.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _busy(bind: str) -> str:
    """Why ``bind`` cannot be listened on, at once (gunicorn would retry for 5 s first); '' if it can."""
    import errno
    import socket

    host, _, port = bind.rpartition(":")
    if not port.isdigit() or bind.startswith("unix:"):
        return ""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host.strip("[]") or "0.0.0.0", int(port)))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return f"{bind} is in use by another program (set PORT, or --port, to another port)"
        return f"{bind}: {exc.strerror}"
    return ""


def _fake_llm(args: argparse.Namespace) -> int:
    from .devtools.fake_llm import serve

    serve(args.host, args.port, api_key=args.api_key, latency=args.latency, jitter=args.jitter,
          fail_rate=args.fail_rate, hang_rate=args.hang_rate, seed=args.seed, sentences=args.sentences,
          sentence_gap=args.sentence_gap)
    return 0


def _chat(args: argparse.Namespace) -> int:
    from .chat import main as chat_main

    return chat_main(args.url, verbose=args.verbose)


def _call(args: argparse.Namespace) -> int:
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
    import requests

    url, headers = _service(args)
    try:
        answer = requests.request(method, url + path, json=body, headers=headers, timeout=60)
    except requests.RequestException as exc:
        raise OSError(f"cannot reach {url}: {type(exc).__name__}") from None
    try:
        return answer.status_code, answer.json()
    except ValueError:
        return answer.status_code, {"message": answer.text[:200]}


def _campaign(args: argparse.Namespace) -> int:
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
        from .outbound.results import write_results

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
        from .outbound.results import progress_line

        print(progress_line(answer, bar=sys.stdout.isatty()))
    return 0


def _try(args: argparse.Namespace) -> int:
    from .devtools.try_voipbin import run

    return run()


def _demo_tools(args: argparse.Namespace) -> int:
    from .devtools.demo_tools import serve

    serve(args.host, args.port, args.secret)
    return 0


def _fake_voipbin(args: argparse.Namespace) -> int:
    from .devtools.fake_voipbin import serve

    serve(args.host, args.port, args.access_key, args.webhook)
    return 0


def _fake_twilio(args: argparse.Namespace) -> int:
    from .devtools.fake_twilio import serve

    serve(args.host, args.port, account_sid=args.account_sid, auth_token=args.auth_token)
    return 0


def _voipbin_setup(args: argparse.Namespace) -> int:
    from .platforms import load_config
    from .voipbin.client import VoipbinClient
    from .voipbin.exceptions import VoipbinError
    from .voipbin.setup import set_up_account

    settings = load_config()  # checked as a start would: what it prints must then start (main says why not)
    if not settings["VOIPBIN_ACCESS_KEY"]:
        print("voicebot: set VOIPBIN_ACCESS_KEY to an access key of the VoIPBin account first", file=sys.stderr)
        return 2
    numbers = [n for given in args.number for n in given.split(",") if n.strip()]
    client = VoipbinClient(settings["VOIPBIN_API_URL"], settings["VOIPBIN_ACCESS_KEY"], read_timeout=15.0)
    try:
        result = set_up_account(client, args.public_url, numbers, fetch_token=settings["VOIPBIN_FETCH_TOKEN"],
                                dry_run=args.dry_run)
    except VoipbinError as exc:
        print(f"voicebot: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    if args.dry_run:
        print(f"dry run: {len(result.changes)} change(s) listed above, nothing written")
    elif not result.changes:
        print("nothing to change: the account was already set up")
    print("\nvoicebot's environment for this account (then restart voicebot):")
    print(f"VOIPBIN_WEBHOOK_SECRET={result.webhook_secret}")
    print(f"VOIPBIN_FETCH_TOKEN={result.fetch_token}")
    print(f"VOIPBIN_NUMBERS={','.join(result.numbers)}")
    return 0


def _since(text: str) -> float:
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


def _calls_export(args: argparse.Namespace) -> int:
    import json

    from .exceptions import StoreError
    from .platforms import load_config
    from .records.outbox import build_outbox

    settings = load_config()  # a bad setting: main says which, in one line
    if not settings["REDIS_URL"]:
        print("voicebot: with the in-memory store, records live in the serving process only; set REDIS_URL "
              "(or CALL_REPORT_URL) to keep them where this command can read them", file=sys.stderr)
        return 2
    outbox = build_outbox(settings)
    columns = None
    if args.csv and settings["ANALYSIS_FILE"]:
        from .records.plan import load_plan

        columns = load_plan(settings["ANALYSIS_FILE"]).columns()
    out = open(args.output, "w", newline="" if args.csv else None) if args.output else sys.stdout
    count = 0
    try:
        if args.csv:
            from .records.spreadsheet import write_csv

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


def _nginx_config(args: argparse.Namespace) -> int:
    from .deploy import SiteError, nginx_config

    try:
        site = nginx_config(args.server_name, args.port or [8000], listen=args.listen, cert=args.tls_cert,
                            key=args.tls_key)
    except SiteError as exc:
        print(f"voicebot nginx-config: {exc}", file=sys.stderr)
        return 2
    print(site, end="")
    return 0


def _simulate(args: argparse.Namespace) -> int:
    import json
    import os

    from .devtools.simulate import Campaign, format_summary, ok, progress_printer

    voipbin = None
    if args.contract == "voipbin":
        from .devtools.fake_voipbin import FakeVoipbin

        host, _, port = args.voipbin_listen.rpartition(":")
        try:
            voipbin = FakeVoipbin(host or "127.0.0.1", int(port), access_key=args.access_key,
                                  webhook_secret=args.secret).start()
            voipbin.latency = args.rest_latency
        except OSError as exc:
            print(f"voicebot simulate: the built-in fake VoIPBin cannot listen on {args.voipbin_listen} "
                  f"({exc.strerror}); choose another with --voipbin-listen", file=sys.stderr)
            return 2
        print(f"fake VoIPBin listening on {voipbin.api_url}: start voicebot with VOIPBIN_API_URL={voipbin.api_url} "
              f"VOIPBIN_ACCESS_KEY={args.access_key} VOIPBIN_WEBHOOK_SECRET=<--secret> "
              f"VOIPBIN_NUMBERS={args.number}", file=sys.stderr)
    campaign = Campaign(args.urls, contract=args.contract, calls=args.calls, turns=args.turns,
                        think=args.think, ramp=args.ramp, timeout=args.timeout, history=args.history,
                        secret=args.secret, voipbin=voipbin, number=args.number, twilio_token=args.twilio_token,
                        public_url=args.public_url, progress=progress_printer(),
                        token=args.token if args.token is not None else os.environ.get("WEBHOOK_TOKEN", ""))
    try:
        not_up = campaign.wait_until_up(args.wait)
        if not_up:
            print(f"voicebot simulate: {not_up}", file=sys.stderr)
            return 2
        summary = campaign.run()
    finally:
        if voipbin is not None:
            voipbin.stop()
    print(file=sys.stderr)
    print(format_summary(summary))
    if args.json:
        text = json.dumps(summary, indent=2)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w") as out:
                out.write(text + "\n")
    return 0 if ok(summary) else 1


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default in --help (only where it has one worth showing)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text: str = action.help or ""
        if (action.default is None or action.default is False or action.default in ("", argparse.SUPPRESS)
                or "%(default)" in text or "default:" in text):
            return text
        return super()._get_help_string(action) or text


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("voicebot")
    except PackageNotFoundError:  # run from a checkout that was not installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voicebot", formatter_class=_Help,
        description="The HTTP backend behind an AI phone agent. Settings come from the environment "
                    "(see the README's configuration table).")
    parser.add_argument("--version", action="version", version=f"voicebot {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, help: str, description: str = "") -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help, description=description or help, formatter_class=_Help)

    serve = command("serve", "run the service under gunicorn (settings from the environment)",
                    "Runs voicebot under gunicorn with voicebot/gunicorn_config.py. Options it does not know "
                    "go to gunicorn, e.g. --bind 0.0.0.0:8000.")
    serve.add_argument("--port", type=int, help="listen on 127.0.0.1:PORT (default: the PORT setting, 8000)")
    serve.add_argument("--check-config", action="store_true",
                       help="check every setting (and TOOLS_FILE) as a real start would, then exit; this reaches "
                            "nothing (add --connect)")
    serve.add_argument("--connect", action="store_true",
                       help="with --check-config: also reach Redis, the model's API (no tokens spent) and VoIPBin "
                            "where configured, and say what answered (exit 1 if anything did not)")
    serve.set_defaults(run=_serve)

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
    call.set_defaults(run=_call)

    campaign = command("campaign", "run a campaign of calls in the running voicebot: start, status, pause, "
                                   "resume, cancel, results").add_subparsers(
        dest="campaign_command", metavar="COMMAND", required=True)

    def campaign_command(name: str, help: str) -> argparse.ArgumentParser:
        sub = campaign.add_parser(name, help=help, description=help, formatter_class=_Help)
        sub.add_argument("--url", help="the running voicebot (default: http://127.0.0.1:$PORT)")
        sub.set_defaults(run=_campaign)
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

    talk = command("chat", "be the caller: type what the caller says, read the bot's replies",
                   "Starts a call and prints each reply with its latency and any action. /hangup or Ctrl-D "
                   "ends the call. Piped input works too.")
    talk.add_argument("--url", help="a running voicebot, e.g. http://127.0.0.1:8000 (WEBHOOK_TOKEN from the "
                                    "environment); default: an app in this process on the embedded defaults")
    talk.add_argument("--verbose", action="store_true",
                      help="also show the service's log lines (with no --url; otherwise they are off)")
    talk.set_defaults(run=_chat)

    trial = command("try", "try a platform on this machine, with nothing to set up")
    trial.add_argument("platform", choices=("voipbin",),
                       help="voipbin: a fake VoIPBin and a voicebot wired to it; you type as the caller")
    trial.set_defaults(run=_try)

    fake = command("fake-llm", "a local Anthropic Messages API that echoes markers (tests, trials, benchmarks)")
    fake.add_argument("--host", default="127.0.0.1", help="address to listen on")
    fake.add_argument("--port", type=int, default=8765, help="port to listen on")
    fake.add_argument("--api-key", default="test-key", help="the x-api-key it accepts")
    fake.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    fake.add_argument("--jitter", type=float, default=0.0, help="± seconds around --latency")
    fake.add_argument("--sentences", type=int, default=1,
                      help="sentences per reply: the echo, then plain ones (streamed one by one when asked to stream)")
    fake.add_argument("--sentence-gap", type=float, default=0.0,
                      help="seconds the model takes for each sentence after the first (--latency is the first's)")
    fake.add_argument("--fail-rate", type=float, default=0.0, help="share of requests answered 529")
    fake.add_argument("--hang-rate", type=float, default=0.0, help="share of requests never answered")
    fake.add_argument("--seed", type=int, default=0, help="seed of the failure draws")
    fake.set_defaults(run=_fake_llm)

    demo = command("demo-tools", "a small order-status tool service to try TOOLS_FILE with")
    demo.add_argument("--host", default="127.0.0.1", help="address to listen on")
    demo.add_argument("--port", type=int, default=8767, help="port to listen on")
    demo.add_argument("--secret", default="demo-tools-secret", help="the TOOLS_SECRET it checks")
    demo.set_defaults(run=_demo_tools)

    voipbin = command("fake-voipbin", "a local VoIPBin REST API that prints what is said into calls")
    voipbin.add_argument("--host", default="127.0.0.1", help="address to listen on")
    voipbin.add_argument("--port", type=int, default=8766, help="port to listen on")
    voipbin.add_argument("--access-key", default="test-access-key", help="the VOIPBIN_ACCESS_KEY it accepts")
    voipbin.add_argument("--webhook", default="", help="where the events of calls it places go, e.g. "
                                                       "http://127.0.0.1:8000/webhook/voipbin (signed with "
                                                       "test-webhook-secret-0123456789ab)")
    voipbin.set_defaults(run=_fake_voipbin)

    fake_twilio = command("fake-twilio", "a local Twilio Calls API that plays the calls it is asked to place")
    fake_twilio.add_argument("--host", default="127.0.0.1", help="address to listen on")
    fake_twilio.add_argument("--port", type=int, default=8767, help="port to listen on")
    fake_twilio.add_argument("--account-sid", default="AC" + "1" * 32, help="the TWILIO_ACCOUNT_SID it accepts")
    fake_twilio.add_argument("--auth-token", default="twilio-auth-token-for-tests",
                             help="the TWILIO_AUTH_TOKEN it accepts and signs its requests with")
    fake_twilio.set_defaults(run=_fake_twilio)

    account = command("voipbin", "work on a VoIPBin account").add_subparsers(
        dest="voipbin_command", metavar="COMMAND", required=True)
    setup = account.add_parser(
        "setup", formatter_class=_Help,
        help="point a VoIPBin account at this voicebot (webhook, flow, numbers); safe to run again",
        description="Reads VOIPBIN_ACCESS_KEY (and VOIPBIN_API_URL, VOIPBIN_FETCH_TOKEN) from the environment. "
                    "Sets the account's webhook (keeping its other details), creates or updates a flow "
                    "'voicebot' that hands calls to voicebot, attaches it to the numbers, and prints the "
                    "settings voicebot needs. A second run changes nothing.")
    setup.add_argument("--public-url", required=True,
                       help="where VoIPBin reaches voicebot, e.g. https://bot.example.com")
    setup.add_argument("--number", action="append", required=True,
                       help="a number of the account whose calls the bot answers (repeat, or comma-separate)")
    setup.add_argument("--dry-run", action="store_true", help="print what would change and write nothing")
    setup.set_defaults(run=_voipbin_setup)

    calls = command("calls", "end-of-call records").add_subparsers(
        dest="calls_command", metavar="COMMAND", required=True)
    export = calls.add_parser("export", formatter_class=_Help,
                              help="write the kept end-of-call records as JSON lines (or CSV)",
                              description="Reads the records kept in Redis (REDIS_URL, REDIS_PREFIX) for "
                                          "CALL_RECORD_RETENTION_SECONDS and writes one JSON object per line; "
                                          "with --csv, one row per call for a spreadsheet, the analysis's "
                                          "structured data (ANALYSIS_FILE's schema) as columns.")
    export.add_argument("--since", type=_since, default=0.0,
                        help="only records made since: 90m, 2h, 7d, 2026-11-24, 2026-11-24T08:00Z (default: all)")
    export.add_argument("--output", help="a file to write (default: standard output)")
    export.add_argument("--csv", "--analysis", dest="csv", action="store_true",
                        help="CSV, one row per call: its facts, var.<name> per variable, the analysis's summary "
                             "and success, and a column per field of ANALYSIS_FILE's schema")
    export.set_defaults(run=_calls_export)

    nginx = command("nginx-config", "print the nginx site that keeps slow clients away from voicebot on a VM",
                    "Prints an nginx server block for voicebot listening on 127.0.0.1:PORT. Save it as "
                    "/etc/nginx/sites-enabled/voicebot and raise worker_connections as it says.")
    nginx.add_argument("--server-name", required=True, help="the public host name, e.g. bot.example.com")
    nginx.add_argument("--port", type=int, action="append",
                       help="voicebot's PORT on this machine (8000); again for each instance behind this nginx")
    nginx.add_argument("--listen", default="", help="what nginx listens on: 443 with a certificate, 80 without")
    nginx.add_argument("--tls-cert", default="", help="certificate file, e.g. certbot's fullchain.pem")
    nginx.add_argument("--tls-key", default="", help="its private key file, e.g. certbot's privkey.pem")
    nginx.set_defaults(run=_nginx_config)

    sim = command("simulate", "play concurrent calls against voicebot URLs; check isolation against fake-llm")
    sim.add_argument("urls", nargs="+", help="voicebot base URLs, used round robin (e.g. http://127.0.0.1:8000)")
    sim.add_argument("--contract", choices=("article", "voipbin", "twilio", "twilio-relay"), default="article",
                     help="the webhook contract to drive: article (the article's), voipbin, twilio (the Gather "
                          "loop) or twilio-relay (ConversationRelay's WebSocket, TWILIO_MODE=relay)")
    sim.add_argument("--calls", type=int, default=50, help="concurrent calls")
    sim.add_argument("--turns", type=int, default=4, help="caller turns per call")
    sim.add_argument("--think", type=float, default=0.0, help="seconds between a reply and the next turn")
    sim.add_argument("--ramp", type=float, default=0.0, help="seconds over which call starts are spread")
    sim.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for one answer")
    sim.add_argument("--history", type=int, default=20, help="the server's MAX_HISTORY_TURNS")
    sim.add_argument("--json", metavar="FILE", help="also write the summary as JSON ('-': stdout)")
    sim.add_argument("--secret", default="test-webhook-secret-0123456789ab",
                     help="VOIPBIN_WEBHOOK_SECRET of the voicebot under test (voipbin contract)")
    sim.add_argument("--voipbin-listen", default="127.0.0.1:8766",
                     help="where the built-in fake VoIPBin listens (voipbin contract)")
    sim.add_argument("--rest-latency", type=float, default=0.0,
                     help="seconds the built-in fake VoIPBin takes to answer each REST request (voipbin contract)")
    sim.add_argument("--access-key", default="test-access-key",
                     help="VOIPBIN_ACCESS_KEY it accepts (voipbin contract)")
    sim.add_argument("--number", default="+15559870000",
                     help="the number the simulated calls dial: one of the server's VOIPBIN_NUMBERS (voipbin contract)")
    sim.add_argument("--twilio-token", default="test-twilio-auth-token",
                     help="TWILIO_AUTH_TOKEN of the voicebot under test: requests are signed with it (twilio contract)")
    sim.add_argument("--public-url", default="",
                     help="PUBLIC_URL of the voicebot under test, if it has one: what the signatures cover "
                          "(twilio contract; default: each request's own URL)")
    sim.add_argument("--token", help="the WEBHOOK_TOKEN of the voicebot under test, sent as a bearer token "
                                     "(article contract; default: WEBHOOK_TOKEN from the environment)")
    sim.add_argument("--wait", type=float, default=30.0,
                     help="seconds to wait for every URL's /healthz before the campaign starts")
    sim.set_defaults(run=_simulate)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if extra and args.command != "serve":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    return _run_in_one_line(args)


def _run_in_one_line(args: argparse.Namespace) -> int:
    """Every command fails in one line, never a traceback: a bad setting or file says which and exits 2,
    anything else says what broke and exits 1 (VOICEBOT_TRACEBACK=1 shows the traceback too)."""
    import os

    from .exceptions import ConfigError, VoicebotError

    name = f"voicebot {args.command}"
    try:
        return args.run(args) or 0
    except ConfigError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except (VoicebotError, OSError) as exc:
        if os.environ.get("VOICEBOT_TRACEBACK"):
            raise
        print(f"{name}: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        if os.environ.get("VOICEBOT_TRACEBACK"):
            raise
        print(f"{name} failed: {type(exc).__name__}: {exc} (VOICEBOT_TRACEBACK=1 shows where)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

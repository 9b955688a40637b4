"""The ``voicebot`` command: ``serve`` the app under gunicorn; ``fake-llm`` and ``fake-voipbin`` to try it."""

from __future__ import annotations

import argparse
import sys


def _serve(args: argparse.Namespace) -> int:
    from . import config
    from .exceptions import ConfigError

    # Before gunicorn is imported: it reads WEB_CONCURRENCY itself, as it loads,
    # and a bad value would end in its traceback instead of this one line.
    try:
        settings = config.load()
        if "--check-config" in args.extra:
            config.check_worker_model(settings, config.worker_count(settings))
    except ConfigError as exc:
        print(f"voicebot refuses to start: {exc}", file=sys.stderr)
        return 2
    if "--check-config" in args.extra:
        print(f"configuration OK: {config.worker_count(settings)} worker(s), "
              f"{'Redis' if settings['REDIS_URL'] else 'in-memory'} sessions")
        return 0
    from gunicorn.app.wsgiapp import run

    # The same settings as `gunicorn app:app` from the repository, but usable
    # from any folder once voicebot is installed.
    sys.argv = ["gunicorn", "--config", "python:voicebot.gunicorn_config", *args.extra,
                "voicebot:create_app()"]
    return run()


def _fake_llm(args: argparse.Namespace) -> int:
    from .fake_llm import serve

    serve(args.host, args.port, api_key=args.api_key, latency=args.latency, jitter=args.jitter,
          fail_rate=args.fail_rate, hang_rate=args.hang_rate, seed=args.seed)
    return 0


def _chat(args: argparse.Namespace) -> int:
    from .chat import main as chat_main

    return chat_main(args.url)


def _demo_tools(args: argparse.Namespace) -> int:
    from .demo_tools import serve

    serve(args.host, args.port, args.secret)
    return 0


def _fake_voipbin(args: argparse.Namespace) -> int:
    from .voipbin.fake import serve

    serve(args.host, args.port, args.access_key)
    return 0


def _voipbin_setup(args: argparse.Namespace) -> int:
    from . import config
    from .exceptions import ConfigError, VoipbinError
    from .voipbin.client import VoipbinClient
    from .voipbin.setup import set_up_account

    try:
        settings = {**config.DEFAULTS, **config.from_environ()}
    except ConfigError as exc:
        print(f"voicebot: {exc}", file=sys.stderr)
        return 2
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

    from . import config
    from .exceptions import ConfigError, StoreError
    from .records import build_outbox

    try:
        settings = config.load()
    except ConfigError as exc:
        print(f"voicebot: {exc}", file=sys.stderr)
        return 2
    if not settings["REDIS_URL"]:
        print("voicebot: with the in-memory store, records live in the serving process only; set REDIS_URL "
              "(or CALL_REPORT_URL) to keep them where this command can read them", file=sys.stderr)
        return 2
    outbox = build_outbox(settings)
    out = open(args.output, "w") if args.output else sys.stdout
    count = 0
    try:
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
    from .deploy import nginx_config

    print(nginx_config(args.server_name, args.port, listen=args.listen, cert=args.tls_cert, key=args.tls_key),
          end="")
    return 0


def _simulate(args: argparse.Namespace) -> int:
    import json

    from .simulate import Campaign, format_summary, ok, progress_printer

    voipbin = None
    if args.contract == "voipbin":
        from .voipbin.fake import FakeVoipbin

        host, _, port = args.voipbin_listen.rpartition(":")
        voipbin = FakeVoipbin(host or "127.0.0.1", int(port), access_key=args.access_key,
                              webhook_secret=args.secret).start()
        print(f"fake VoIPBin listening on {voipbin.api_url}: start voicebot with VOIPBIN_API_URL={voipbin.api_url} "
              f"VOIPBIN_ACCESS_KEY={args.access_key} VOIPBIN_WEBHOOK_SECRET=<--secret> "
              f"VOIPBIN_NUMBERS={args.number}", file=sys.stderr)
    campaign = Campaign(args.urls, contract=args.contract, calls=args.calls, turns=args.turns,
                        think=args.think, ramp=args.ramp, timeout=args.timeout, history=args.history,
                        secret=args.secret, voipbin=voipbin, number=args.number, progress=progress_printer())
    try:
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="voicebot", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser(
        "serve", help="run the service under gunicorn (settings from the environment)",
        description="Any further options go to gunicorn, e.g. --bind 127.0.0.1:9000. "
                    "--check-config checks every setting (and TOOLS_FILE) and exits.")
    serve.set_defaults(run=_serve)

    fake = commands.add_parser("fake-llm", help="a local Anthropic Messages API that echoes markers")
    fake.add_argument("--host", default="127.0.0.1")
    fake.add_argument("--port", type=int, default=8765)
    fake.add_argument("--api-key", default="test-key", help="the x-api-key it accepts")
    fake.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    fake.add_argument("--jitter", type=float, default=0.0, help="± seconds around --latency")
    fake.add_argument("--fail-rate", type=float, default=0.0, help="share of requests answered 529")
    fake.add_argument("--hang-rate", type=float, default=0.0, help="share of requests never answered")
    fake.add_argument("--seed", type=int, default=0, help="seed of the failure draws")
    fake.set_defaults(run=_fake_llm)

    talk = commands.add_parser("chat", help="be the caller: type what the caller says, read the bot's replies",
                               description="Starts a call and prints each reply with its latency and any action. "
                                           "/hangup or Ctrl-D ends the call. Piped input works too.")
    talk.add_argument("--url", help="a running voicebot, e.g. http://127.0.0.1:8000 (WEBHOOK_TOKEN from the "
                                    "environment); default: an app in this process on the embedded defaults")
    talk.set_defaults(run=_chat)

    demo = commands.add_parser("demo-tools", help="a small order-status tool service to try TOOLS_FILE with")
    demo.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    demo.add_argument("--port", type=int, default=8767, help="port to listen on (default: 8767)")
    demo.add_argument("--secret", default="demo-tools-secret", help="the TOOLS_SECRET it checks (default: %(default)s)")
    demo.set_defaults(run=_demo_tools)

    voipbin = commands.add_parser("fake-voipbin", help="a local VoIPBin REST API that prints what is said")
    voipbin.add_argument("--host", default="127.0.0.1")
    voipbin.add_argument("--port", type=int, default=8766)
    voipbin.add_argument("--access-key", default="test-access-key")
    voipbin.set_defaults(run=_fake_voipbin)

    account = commands.add_parser("voipbin", help="work on a VoIPBin account").add_subparsers(
        dest="voipbin_command", required=True)
    setup = account.add_parser(
        "setup", help="point a VoIPBin account at this voicebot (webhook, flow, numbers); safe to run again",
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

    calls = commands.add_parser("calls", help="end-of-call records").add_subparsers(
        dest="calls_command", required=True)
    export = calls.add_parser("export", help="write the kept end-of-call records as JSON lines",
                              description="Reads the records kept in Redis (REDIS_URL, REDIS_PREFIX) for "
                                          "CALL_RECORD_RETENTION_SECONDS and writes one JSON object per line.")
    export.add_argument("--since", type=_since, default=0.0,
                        help="only records made since: 90m, 2h, 7d, 2026-11-24, 2026-11-24T08:00Z (default: all)")
    export.add_argument("--output", help="a file to write (default: standard output)")
    export.set_defaults(run=_calls_export)

    nginx = commands.add_parser(
        "nginx-config", help="print the nginx site that keeps slow clients away from voicebot on a VM",
        description="Prints an nginx server block for voicebot listening on 127.0.0.1:PORT. "
                    "Save it as /etc/nginx/sites-enabled/voicebot and raise worker_connections as it says.")
    nginx.add_argument("--server-name", required=True, help="the public host name, e.g. bot.example.com")
    nginx.add_argument("--port", type=int, default=8000, help="voicebot's PORT on this machine (default: 8000)")
    nginx.add_argument("--listen", default="443", help="what nginx listens on (default: 443)")
    nginx.add_argument("--tls-cert", default="", help="certificate file, e.g. certbot's fullchain.pem")
    nginx.add_argument("--tls-key", default="", help="its private key file, e.g. certbot's privkey.pem")
    nginx.set_defaults(run=_nginx_config)

    sim = commands.add_parser("simulate", help="play concurrent calls against voicebot URLs and check isolation")
    sim.add_argument("urls", nargs="+", help="voicebot base URLs, used round robin (e.g. http://127.0.0.1:8000)")
    sim.add_argument("--contract", choices=("seed", "voipbin"), default="seed")
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
    sim.add_argument("--access-key", default="test-access-key", help="VOIPBIN_ACCESS_KEY it accepts")
    sim.add_argument("--number", default="+15559870000",
                     help="the number the simulated calls dial: one of the server's VOIPBIN_NUMBERS (voipbin contract)")
    sim.set_defaults(run=_simulate)

    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "serve":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    return args.run(args) or 0


if __name__ == "__main__":
    sys.exit(main())

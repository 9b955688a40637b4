"""``voicebot voipbin setup``: a VoIPBin account pointed at this voicebot."""

from __future__ import annotations

import argparse
import sys

from .base import Command, Help


def register(command: Command) -> None:
    """Add this module's commands to the voicebot command."""
    account = command("voipbin", "work on a VoIPBin account").add_subparsers(
        dest="voipbin_command", metavar="COMMAND", required=True)
    setup = account.add_parser(
        "setup", formatter_class=Help,
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
    setup.set_defaults(run=run_voipbin_setup)


def run_voipbin_setup(args: argparse.Namespace) -> int:
    from ..platforms import load_config
    from ..voipbin.client import VoipbinClient
    from ..voipbin.exceptions import VoipbinError
    from ..voipbin.setup import set_up_account

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

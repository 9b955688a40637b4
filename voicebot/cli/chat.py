"""``voicebot chat``: the person at the keyboard is the caller."""

from __future__ import annotations

import argparse

from .base import Command


def register(command: Command) -> None:
    """Add this module's commands to the voicebot command."""
    talk = command("chat", "be the caller: type what the caller says, read the bot's replies",
                   "Starts a call and prints each reply with its latency and any action. /hangup or Ctrl-D "
                   "ends the call. Piped input works too.")
    talk.add_argument("--url", help="a running voicebot, e.g. http://127.0.0.1:8000 (WEBHOOK_TOKEN from the "
                                    "environment); default: an app in this process on the embedded defaults")
    talk.add_argument("--verbose", action="store_true",
                      help="also show the service's log lines (with no --url; otherwise they are off)")
    talk.set_defaults(run=run_chat)


def run_chat(args: argparse.Namespace) -> int:
    from ..chat import main as chat_main

    return chat_main(args.url, verbose=args.verbose)

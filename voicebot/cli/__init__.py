"""The voicebot command: serve the app under gunicorn, talk to it, try it, connect an account, check it.

One module per command group, each adding its own commands (``register``):
``serve``, ``chat``, ``agent_test`` (test), ``outbound`` (call, campaign),
``records`` (calls export), ``voipbin`` (setup), ``deploy`` (nginx-config)
and ``trials`` (try, simulate, the fakes).
"""

from __future__ import annotations

import argparse
import sys

from . import agent_test, chat, deploy, outbound, records, serve, trials, voipbin
from .base import Help


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voicebot", formatter_class=Help,
        description="The HTTP backend behind an AI phone agent. Settings come from the environment "
                    "(see the README's configuration table).")
    parser.add_argument("--version", action="version", version=f"voicebot {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, help: str, description: str = "") -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help, description=description or help, formatter_class=Help)

    for group in (serve, outbound, chat, agent_test, trials, voipbin, records, deploy):
        group.register(command)
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

    from ..exceptions import ConfigError, VoicebotError

    name = f"voicebot {args.command}"
    try:
        return args.run(args) or 0
    except ConfigError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except ModuleNotFoundError as exc:
        if (exc.name or "").startswith("voicebot_testing"):
            # The production image carries the service alone (Dockerfile): the trial tools come with a checkout.
            print(f"{name}: the trial tools (voicebot_testing) are not installed here; they come with an "
                  "install from a checkout (pip install -e .), not with the production image", file=sys.stderr)
            return 2
        if os.environ.get("VOICEBOT_TRACEBACK"):
            raise
        print(f"{name} failed: {type(exc).__name__}: {exc} (VOICEBOT_TRACEBACK=1 shows where)", file=sys.stderr)
        return 1
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


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("voicebot")
    except PackageNotFoundError:  # run from a checkout that was not installed
        return "unknown"

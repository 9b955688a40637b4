"""The ``voicebot`` command: ``serve`` the app under gunicorn; ``fake-llm`` and ``fake-voipbin`` to try it."""

from __future__ import annotations

import argparse
import sys


def _serve(args: argparse.Namespace) -> int:
    from gunicorn.app.wsgiapp import run

    # The same settings as `gunicorn app:app` from the repository, but usable
    # from any folder once voicebot is installed.
    sys.argv = ["gunicorn", "--config", "python:voicebot.gunicorn_config", *args.gunicorn_args,
                "voicebot:create_app()"]
    return run()


def _fake_llm(args: argparse.Namespace) -> int:
    from .fake_llm import serve

    serve(args.host, args.port, api_key=args.api_key, latency=args.latency, jitter=args.jitter,
          fail_rate=args.fail_rate, hang_rate=args.hang_rate, seed=args.seed)
    return 0


def _fake_voipbin(args: argparse.Namespace) -> int:
    from .voipbin.fake import serve

    serve(args.host, args.port, args.access_key)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="voicebot", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the service under gunicorn (settings from the environment)")
    serve.add_argument("gunicorn_args", nargs=argparse.REMAINDER,
                       help="extra gunicorn options, e.g. --bind 127.0.0.1:9000")
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

    voipbin = commands.add_parser("fake-voipbin", help="a local VoIPBin REST API that prints what is said")
    voipbin.add_argument("--host", default="127.0.0.1")
    voipbin.add_argument("--port", type=int, default=8766)
    voipbin.add_argument("--access-key", default="test-access-key")
    voipbin.set_defaults(run=_fake_voipbin)

    args = parser.parse_args(argv)
    return args.run(args) or 0


if __name__ == "__main__":
    sys.exit(main())

"""``voicebot try``, ``simulate`` and the fakes: trials on this machine, from the ``voicebot_testing`` package.

That package ships beside the service in a checkout's install, not in the production image: where it is
missing, these commands say so in one line."""

from __future__ import annotations

import argparse
import sys

from .base import Command


def register(command: Command) -> None:
    """Add this module's commands to the voicebot command."""
    trial = command("try", "try a platform on this machine, with nothing to set up")
    trial.add_argument("platform", choices=("voipbin", "twilio"),
                       help="voipbin: a fake VoIPBin and a voicebot wired to it; twilio: a voicebot on a loopback "
                            "port and this process playing Twilio; you type as the caller")
    trial.add_argument("--mode", choices=("gather", "relay"), default="gather",
                       help="twilio: the Gather loop, or ConversationRelay's streamed WebSocket")
    trial.set_defaults(run=run_try)

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
    fake.set_defaults(run=run_fake_llm)

    openai = command("fake-openai", "a local OpenAI Chat Completions API that echoes markers (LLM_PROVIDER=openai)")
    openai.add_argument("--host", default="127.0.0.1", help="address to listen on")
    openai.add_argument("--port", type=int, default=8768, help="port to listen on")
    openai.add_argument("--api-key", default="test-openai-key", help="the bearer key it accepts")
    openai.add_argument("--model", default="test-model", help="the one model it serves")
    openai.set_defaults(run=run_fake_openai)

    demo = command("demo-tools", "a small order-status tool service to try TOOLS_FILE with")
    demo.add_argument("--host", default="127.0.0.1", help="address to listen on")
    demo.add_argument("--port", type=int, default=8767, help="port to listen on")
    demo.add_argument("--secret", default="demo-tools-secret", help="the TOOLS_SECRET it checks")
    demo.set_defaults(run=run_demo_tools)

    voipbin = command("fake-voipbin", "a local VoIPBin REST API that prints what is said into calls")
    voipbin.add_argument("--host", default="127.0.0.1", help="address to listen on")
    voipbin.add_argument("--port", type=int, default=8766, help="port to listen on")
    voipbin.add_argument("--access-key", default="test-access-key", help="the VOIPBIN_ACCESS_KEY it accepts")
    voipbin.add_argument("--webhook", default="", help="where the events of calls it places go, e.g. "
                                                       "http://127.0.0.1:8000/webhook/voipbin (signed with "
                                                       "test-webhook-secret-0123456789ab)")
    voipbin.set_defaults(run=run_fake_voipbin)

    fake_twilio = command("fake-twilio", "a local Twilio Calls API that plays the calls it is asked to place")
    fake_twilio.add_argument("--host", default="127.0.0.1", help="address to listen on")
    fake_twilio.add_argument("--port", type=int, default=8767, help="port to listen on")
    fake_twilio.add_argument("--account-sid", default="AC" + "1" * 32, help="the TWILIO_ACCOUNT_SID it accepts")
    fake_twilio.add_argument("--auth-token", default="twilio-auth-token-for-tests",
                             help="the TWILIO_AUTH_TOKEN it accepts and signs its requests with")
    fake_twilio.set_defaults(run=run_fake_twilio)

    sim = command("simulate", "play concurrent calls against voicebot URLs; check isolation against fake-llm")
    sim.add_argument("urls", nargs="+", help="voicebot base URLs, used round robin (e.g. http://127.0.0.1:8000)")
    sim.add_argument("--contract", choices=("article", "voipbin", "twilio", "twilio-relay", "telnyx-relay", "retell",
                                            "openai", "vapi", "elevenlabs"), default="article",
                     help="the webhook contract to drive: article (the article's), voipbin, twilio (the Gather "
                          "loop), twilio-relay (ConversationRelay's WebSocket, TWILIO_MODE=relay), telnyx-relay "
                          "(Telnyx's TeXML relay), retell (Retell's custom-LLM socket), or a front end "
                          "that uses voicebot as its custom LLM: openai (/openai/v1, as Pipecat, LiveKit or "
                          "Telnyx ask), vapi or elevenlabs (streamed Chat Completions, the whole conversation "
                          "each time, and the platform's end-of-call report)")
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
                                     "(article contract; default: WEBHOOK_TOKEN from the environment), or its "
                                     "COMPLETIONS_TOKEN (openai, vapi, elevenlabs; default: COMPLETIONS_TOKEN, "
                                     "else WEBHOOK_TOKEN)")
    sim.add_argument("--elevenlabs-secret", default="",
                     help="ELEVENLABS_WEBHOOK_SECRET of the voicebot under test: each call ends with a signed "
                          "post-call webhook (elevenlabs contract; unset: none is sent)")
    sim.add_argument("--telnyx-private-key", default="",
                     help="the private half (base64) of the key pair whose public half is the server's "
                          "TELNYX_PUBLIC_KEY: TeXML requests are signed with it (telnyx-relay contract; make a pair "
                          "with: python -m voicebot_testing.fake_telnyx)")
    sim.add_argument("--retell-listen", default="127.0.0.1:8769",
                     help="where the built-in fake of Retell's call API listens: the server's RETELL_API_URL "
                          "(retell contract)")
    sim.add_argument("--retell-api-key", default="key_retell_for_tests",
                     help="RETELL_API_KEY of the voicebot under test (retell contract)")
    sim.add_argument("--wait", type=float, default=30.0,
                     help="seconds to wait for every URL's /healthz before the campaign starts")
    sim.set_defaults(run=run_simulate)


def run_fake_llm(args: argparse.Namespace) -> int:
    from voicebot_testing.fake_llm import serve

    serve(args.host, args.port, api_key=args.api_key, latency=args.latency, jitter=args.jitter,
          fail_rate=args.fail_rate, hang_rate=args.hang_rate, seed=args.seed, sentences=args.sentences,
          sentence_gap=args.sentence_gap)
    return 0


def run_fake_openai(args: argparse.Namespace) -> int:
    from voicebot_testing.fake_openai import serve

    serve(args.host, args.port, api_key=args.api_key, model=args.model)
    return 0


def run_try(args: argparse.Namespace) -> int:
    if args.platform == "twilio":
        from voicebot_testing import try_twilio

        return try_twilio.run(args.mode)
    from voicebot_testing.try_voipbin import run

    return run()


def run_demo_tools(args: argparse.Namespace) -> int:
    from voicebot_testing.demo_tools import serve

    serve(args.host, args.port, args.secret)
    return 0


def run_fake_voipbin(args: argparse.Namespace) -> int:
    from voicebot_testing.fake_voipbin import serve

    serve(args.host, args.port, args.access_key, args.webhook)
    return 0


def run_fake_twilio(args: argparse.Namespace) -> int:
    from voicebot_testing.fake_twilio import serve

    serve(args.host, args.port, account_sid=args.account_sid, auth_token=args.auth_token)
    return 0


def _token_of(contract: str) -> str:
    import os

    if contract in ("openai", "vapi", "elevenlabs"):
        return os.environ.get("COMPLETIONS_TOKEN") or os.environ.get("WEBHOOK_TOKEN", "")
    return os.environ.get("WEBHOOK_TOKEN", "")


def run_simulate(args: argparse.Namespace) -> int:
    import json

    from voicebot_testing.simulate import Campaign, format_summary, ok, progress_printer

    voipbin = None
    if args.contract == "voipbin":
        from voicebot_testing.fake_voipbin import FakeVoipbin

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
    retell, telnyx = None, None
    if args.contract == "telnyx-relay":
        from voicebot_testing.fake_telnyx import TelnyxSigner

        if not args.telnyx_private_key:
            print("voicebot simulate: --contract telnyx-relay needs --telnyx-private-key (the private half of the "
                  "server's TELNYX_PUBLIC_KEY; make a pair with: python -m voicebot_testing.fake_telnyx)",
                  file=sys.stderr)
            return 2
        try:
            telnyx = TelnyxSigner(args.telnyx_private_key)
        except ValueError:
            print("voicebot simulate: --telnyx-private-key is not a base64 Ed25519 private key", file=sys.stderr)
            return 2
    if args.contract == "retell":
        from voicebot_testing.fake_retell import FakeRetell

        host, _, port = args.retell_listen.rpartition(":")
        try:
            retell = FakeRetell(args.retell_api_key, host or "127.0.0.1", int(port)).start()
        except (OSError, ValueError) as exc:
            print(f"voicebot simulate: the built-in fake Retell API cannot listen on {args.retell_listen} "
                  f"({getattr(exc, 'strerror', None) or exc}); choose another with --retell-listen", file=sys.stderr)
            return 2
        print(f"fake Retell API listening on {retell.api_url}: start voicebot with RETELL_API_URL={retell.api_url} "
              f"RETELL_API_KEY=<--retell-api-key>", file=sys.stderr)
    campaign = Campaign(args.urls, contract=args.contract, calls=args.calls, turns=args.turns,
                        think=args.think, ramp=args.ramp, timeout=args.timeout, history=args.history,
                        secret=args.secret, voipbin=voipbin, number=args.number, twilio_token=args.twilio_token,
                        public_url=args.public_url, progress=progress_printer(),
                        token=args.token if args.token is not None else _token_of(args.contract),
                        elevenlabs_secret=args.elevenlabs_secret, retell=retell, telnyx=telnyx)
    try:
        not_up = campaign.wait_until_up(args.wait)
        if not_up:
            print(f"voicebot simulate: {not_up}", file=sys.stderr)
            return 2
        summary = campaign.run()
    finally:
        for fake in (voipbin, retell):
            if fake is not None:
                fake.stop()
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

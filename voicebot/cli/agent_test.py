"""``voicebot test FILE``: run an agent's scenarios (scripted and simulated callers) and fail when it regresses."""

from __future__ import annotations

import argparse
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

from .base import Command


def register(command: Command) -> None:
    """Add this module's commands to the voicebot command."""
    test = command("test", "run scripted and simulated callers against the agent; exit 1 when any run fails",
                   "Runs each scenario of FILE (YAML or JSON; see docs/testing-agents.md) as calls of their own, "
                   "against an app in this process on the current settings, or a deployment (--url, with "
                   "WEBHOOK_TOKEN from the environment). Exit 0 when every run passes, 1 when any fails, 2 on a "
                   "bad file.")
    test.add_argument("file", help="the scenarios, YAML or JSON")
    test.add_argument("--url", help="a running voicebot, e.g. http://127.0.0.1:8000 (default: one in this process)")
    test.add_argument("--junit", metavar="PATH", help="also write a JUnit XML file, one test case per run")
    test.add_argument("--repeat", type=int, help="run every scenario this many times (default: each its own)")
    test.add_argument("--concurrency", type=int, default=4, help="runs at once, each a call of its own")
    test.add_argument("--caller-model", help="the model that plays simulated callers (default: LLM_MODEL)")
    test.add_argument("--judge-model", help="the model that grades 'judge' expectations (default: LLM_MODEL)")
    test.set_defaults(run=run_test)


def run_test(args: argparse.Namespace) -> int:
    from ..agent_tests.report import junit, run_line, table
    from ..agent_tests.runner import Tester
    from ..agent_tests.scenarios import ScenarioError, load
    from ..llm import build_llm
    from ..platforms import load_config

    try:
        scenarios = load(args.file, args.repeat)
    except ScenarioError as exc:
        print(f"voicebot test: {exc}", file=sys.stderr)
        return 2
    if args.repeat is not None and not 1 <= args.repeat <= 100 or args.concurrency < 1:
        print("voicebot test: --repeat must be 1 to 100 and --concurrency 1 or more", file=sys.stderr)
        return 2
    settings = load_config()  # a bad setting: main says which, in one line
    caller = build_llm({**settings, "LLM_MODEL": args.caller_model or settings["LLM_MODEL"], "PROMPT_CACHING": False})
    judge = build_llm({**settings, "LLM_MODEL": args.judge_model or settings["LLM_MODEL"], "PROMPT_CACHING": False,
                       "LLM_MAX_TOKENS": max(256, settings["LLM_MAX_TOKENS"])})
    for role, model in (("simulated callers", caller), ("the judge", judge)):
        shown = "the offline responder (no model key: its verdicts and lines mean nothing)" \
            if model.name == "offline" else f"{model.name} {getattr(model, 'model', '')}".strip()
        print(f"{role}: {shown}", file=sys.stderr)
    tester = Tester(_poster(args.url), caller, judge)
    planned = [(scenario, n) for scenario in scenarios for n in range(1, scenario.repeat + 1)]
    runs: list[Any] = []
    try:
        with ThreadPoolExecutor(args.concurrency) as pool:
            futures = [pool.submit(tester.run, scenario, n) for scenario, n in planned]
            for done in as_completed(futures):
                runs.append(done.result())
                print(f"[{len(runs)}/{len(planned)}] {run_line(runs[-1])}", file=sys.stderr, flush=True)
    finally:
        caller.close()
        judge.close()
    order = {(scenario.name, n): i for i, (scenario, n) in enumerate(planned)}
    runs.sort(key=lambda run: order[(run.scenario, run.number)])
    table(runs, sys.stdout)
    if args.junit:
        junit(runs, args.junit)
    failed = [run for run in runs if not run.passed]
    print(f"{len(runs) - len(failed)} passed, {len(failed)} failed", file=sys.stdout)
    return 1 if failed else 0


def _poster(url: str | None) -> Any:
    """A new way to post per run: a deployment over HTTP, or the app in this process (built once)."""
    from ..chat import http_poster

    if url:
        token = os.environ.get("WEBHOOK_TOKEN", "")
        return lambda: http_poster(url, token)
    from .. import create_app

    # The service's own log lines would bury the report: errors only, unless LOG_LEVEL asks for more.
    app = create_app(None if os.environ.get("LOG_LEVEL") else {"LOG_LEVEL": "ERROR"})
    token = app.config["WEBHOOK_TOKEN"]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    local = threading.local()

    def post(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if not hasattr(local, "client"):
            local.client = app.test_client()
        answer = local.client.post(path, json=body, headers=headers)
        return answer.status_code, answer.get_json() or {}

    return lambda: post

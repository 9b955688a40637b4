"""Time to the first delta of a streamed Chat Completions reply (voicebot as a custom LLM), beside the model's
first words, at 200 concurrent streams.

    .venv/bin/python bench/first_delta.py                   # 200 calls x 4 turns, 1 s think, 3 rounds
    .venv/bin/python bench/first_delta.py --against 3bbcc97  # A/B: rounds alternate with that commit

voicebot runs as the Procfile runs it (``REDIS_URL`` to a private redis-server, ``WEB_CONCURRENCY=2``,
``COMPLETIONS_TOKEN``). One compiled process (``loadgen completions``) plays the front end (each call's
requests carry the whole conversation, ``X-Call-Id`` names the call) and the model (first words after
``--model-latency``, two more sentences ``--sentence-gap`` apart), so the load takes little of the two cores
it shares with voicebot; each round says how much. Per round: the first delta's time from the request, and
from the moment the model's first words left it (one clock): the issue's "within 10 ms of the model's first
token at p99".
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from knee import Server, build  # noqa: E402

from voicebot_testing.processes import free_port  # noqa: E402

TOKEN = "bench-completions-token"

HEADER = ("| round | turns ok | crossed | turns/s | first delta p50 / p99 ms | first delta beyond the model's first "
          "words p50 / p90 / p99 / max ms | voicebot CPU ms/turn | loadgen CPU (of one core) |\n"
          "|---|---|---|---|---|---|---|---|")


def row(label: str, r: dict, server_cpu: float) -> str:
    first, beyond = r["first_delta_ms"], r["first_delta_beyond_model_ms"]
    return (f"| {label} | {r['ok']}/{r['turns']} | {r['crossed']} | {r['turns_per_s']:.0f} "
            f"| {first['p50']:.1f} / {first['p99']:.1f} "
            f"| **{beyond['p50']:.1f} / {beyond['p90']:.1f} / {beyond['p99']:.1f}** / {beyond['max']:.1f} "
            f"| {1000 * server_cpu / max(1, r['ok']):.2f} | {100 * r['generator_cpu_s'] / r['seconds']:.0f}% |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--think", type=float, default=1.0)
    parser.add_argument("--ramp", type=float, default=5.0)
    parser.add_argument("--model-latency", type=float, default=0.3)
    parser.add_argument("--sentence-gap", type=float, default=0.3)
    parser.add_argument("--against", metavar="REF", help="a commit to measure in alternate rounds")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="voicebot-first-delta-"))
    trees = {"this tree": ROOT}
    if args.against:
        trees[args.against] = tmp / "against"
        subprocess.run(["git", "worktree", "add", "--detach", str(trees[args.against]), args.against], cwd=ROOT,
                       check=True, capture_output=True)
    loadgen = build(tmp)
    model_port = free_port()
    print(f"Chat Completions first delta: {args.calls} calls x {args.turns} turns, {args.think:g} s think, "
          f"{args.ramp:g} s ramp; the model's first words after {args.model_latency:g} s\n" + HEADER, flush=True)
    p99s: dict[str, list[float]] = {name: [] for name in trees}
    try:
        for n in range(1, args.rounds + 1):
            for name, tree in trees.items():
                server = Server("voicebot", loadgen, f"http://127.0.0.1:{model_port}", tmp, tree=tree,
                                log=f"voicebot-{n}-{len(p99s[name])}.log", env={"COMPLETIONS_TOKEN": TOKEN})
                try:
                    before = server.cpu()
                    out = subprocess.run(
                        [str(loadgen), "completions", "-url", server.url, "-model-port", str(model_port),
                         "-model-latency", str(args.model_latency), "-sentence-gap", str(args.sentence_gap),
                         "-calls", str(args.calls), "-turns", str(args.turns), "-think", str(args.think),
                         "-ramp", str(args.ramp), "-token", TOKEN],
                        capture_output=True, text=True, check=True).stdout
                    result = json.loads(out)
                    print(row(f"{n}" if len(trees) == 1 else f"{n} {name}", result, server.cpu() - before),
                          flush=True)
                    p99s[name].append(result["first_delta_beyond_model_ms"]["p99"])
                finally:
                    server.stop()
    finally:
        if args.against:
            subprocess.run(["git", "worktree", "remove", "--force", str(trees[args.against])], cwd=ROOT, check=False)
    for name, values in p99s.items():
        print(f"\n{name}: first delta beyond the model's first words, p99 by round: "
              + ", ".join(f"{v:.1f}" for v in values) + f" ms; within 10 ms in {sum(v <= 10 for v in values)} "
              f"of {len(values)}", flush=True)


if __name__ == "__main__":
    main()

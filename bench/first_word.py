"""Time to first word on VoIPBin, and time to greeting, with a compiled VoIPBin and model.

    .venv/bin/python bench/first_word.py                  # 200 calls x 4 turns, 1 s think, 5 rounds
    .venv/bin/python bench/first_word.py --rounds 3 --calls 400 --rest-latency 0.05
    .venv/bin/python bench/first_word.py --against HEAD~3   # A/B: rounds alternate with that commit

voicebot runs as the Procfile runs it: ``REDIS_URL`` to a private
redis-server, ``WEB_CONCURRENCY=2``, streamed replies (the default), VoIPBin's
settings pointed at ``loadgen voipbin``. That one compiled process
(bench/loadgen) plays VoIPBin's REST API and its signed events and the model
(first sentence after ``--model-latency``, two more ``--sentence-gap`` apart),
so the load takes little of the two cores it shares with voicebot; each round
says how much.

Per round it prints the time from the transcript event to the first ``say``
VoIPBin receives, the model's own time to its first sentence as voicebot
reports it (``Server-Timing: llm-first``), the difference (the issue's "first
word beyond the model's first sentence"), and the time from the model's first
sentence leaving it to that ``say`` arriving, which the load generator times
on one clock; then the time to greeting (``call_progressing`` sent to the
greeting's ``say``).

With ``--against REF``, a git worktree of REF runs in every other round, so
the machine's drift touches both alike.
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

ACCESS_KEY = "bench-access-key"
SECRET = "bench-webhook-secret-0123456789ab"
NUMBER = "+15559870000"


class FakeVoipbinAndModel:
    """``loadgen voipbin``: its REST fake and model on two ports chosen once, served while it drives."""

    def __init__(self, loadgen: Path, args: argparse.Namespace) -> None:
        self.loadgen = loadgen
        self.rest_port, self.model_port = free_port(), free_port()
        self.options = ["-rest-port", str(self.rest_port), "-model-port", str(self.model_port),
                        "-access-key", ACCESS_KEY, "-secret", SECRET, "-number", NUMBER,
                        "-rest-latency", str(args.rest_latency), "-model-latency", str(args.model_latency),
                        "-sentences", "3", "-sentence-gap", str(args.sentence_gap)]

    def drive(self, url: str, calls: int, turns: int, think: float, ramp: float) -> dict:
        out = subprocess.run([str(self.loadgen), "voipbin", "-url", url, *self.options, "-calls", str(calls),
                              "-turns", str(turns), "-think", str(think), "-ramp", str(ramp)],
                             capture_output=True, text=True, check=True).stdout
        result: dict = json.loads(out)
        return result


def voicebot(loadgen: Path, rest_port: int, model_port: int, tmp: Path, n: int, tree: Path = ROOT) -> Server:
    """voicebot as the Procfile runs it, with Redis, its VoIPBin settings pointed at ``loadgen voipbin``."""
    return Server("voicebot", loadgen, f"http://127.0.0.1:{model_port}", tmp, tree=tree, log=f"voicebot-{n}.log",
                  env={"VOIPBIN_ACCESS_KEY": ACCESS_KEY, "VOIPBIN_WEBHOOK_SECRET": SECRET, "VOIPBIN_NUMBERS": NUMBER,
                       "VOIPBIN_API_URL": f"http://127.0.0.1:{rest_port}/v1.0"})


def row(n: str, r: dict, server_cpu: float) -> str:
    beyond, after, greet = r["first_word_beyond_ms"], r["say_after_model_flush_ms"], r["greeting_ms"]
    errors = sum(r["errors"].values())
    return (f"| {n} | {r['ok']}/{r['turns']} | {errors} | {r['crossed']} | {r['turns_per_s']:.0f} "
            f"| {r['first_word_ms']['p50']:.1f} / {r['first_word_ms']['p99']:.1f} "
            f"| {r['model_first_sentence_ms']['p50']:.1f} / {r['model_first_sentence_ms']['p99']:.1f} "
            f"| **{beyond['p50']:.1f} / {beyond['p90']:.1f} / {beyond['p99']:.1f}** / {beyond['max']:.1f} "
            f"| {after['p50']:.1f} / {after['p99']:.1f} | {greet['p50']:.1f} / {greet['p99']:.1f} "
            f"| {1000 * server_cpu / max(1, r['ok']):.2f} | {100 * r['generator_cpu_s'] / r['seconds']:.0f}% |")


HEADER = ("| round | turns ok | errors | crossed | turns/s | first word p50 / p99 ms | model's first sentence "
          "p50 / p99 | first word beyond it p50 / p90 / p99 / max | say after the model's flush p50 / p99 "
          "| greeting p50 / p99 | voicebot CPU ms/turn | loadgen CPU (of one core) |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--think", type=float, default=1.0)
    parser.add_argument("--ramp", type=float, default=5.0)
    parser.add_argument("--model-latency", type=float, default=0.3, help="seconds to the first sentence")
    parser.add_argument("--sentence-gap", type=float, default=0.3)
    parser.add_argument("--rest-latency", type=float, default=0.0, help="seconds VoIPBin's REST API takes")
    parser.add_argument("--against", metavar="REF", help="a commit to measure in alternate rounds")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="voicebot-first-word-"))
    trees = {"this tree": ROOT}
    if args.against:
        trees[args.against] = tmp / "against"
        subprocess.run(["git", "worktree", "add", "--detach", str(trees[args.against]), args.against], cwd=ROOT,
                       check=True, capture_output=True)
    fake = FakeVoipbinAndModel(build(tmp), args)
    print(f"VoIPBin first word: {args.calls} calls x {args.turns} turns, {args.think:g} s think, "
          f"{args.ramp:g} s ramp; the model's first sentence after {args.model_latency:g} s, "
          f"REST {1000 * args.rest_latency:g} ms\n" + HEADER, flush=True)
    beyond_p99: dict[str, list[float]] = {name: [] for name in trees}
    try:
        for n in range(1, args.rounds + 1):
            for name, tree in trees.items():
                # A fresh voicebot and Redis each round: no state carries over.
                server = voicebot(fake.loadgen, fake.rest_port, fake.model_port, tmp, n, tree)
                try:
                    before = server.cpu()
                    result = fake.drive(server.url, args.calls, args.turns, args.think, args.ramp)
                    label = f"{n}" if len(trees) == 1 else f"{n} {name}"
                    print(row(label, result, server.cpu() - before), flush=True)
                    beyond_p99[name].append(result["first_word_beyond_ms"]["p99"])
                finally:
                    server.stop()
    finally:
        if args.against:
            subprocess.run(["git", "worktree", "remove", "--force", str(trees[args.against])], cwd=ROOT, check=False)
    for name, values in beyond_p99.items():
        print(f"\n{name}: first word beyond the model's first sentence, p99 by round: "
              + ", ".join(f"{v:.1f}" for v in values) + f" ms; within 10 ms in {sum(v <= 10 for v in values)} "
              f"of {len(values)}", flush=True)


if __name__ == "__main__":
    main()

"""The knee: the largest campaign each server carries with p99 beyond the model within 50 ms, in one run.

    .venv/bin/python bench/knee.py                    # capacity, knee steps, the 1,000-call campaign
    .venv/bin/python bench/knee.py capacity           # or: knee, campaign; --steps 25,50,100 to choose
    .venv/bin/python bench/knee.py capacity --servers voicebot --against HEAD~3   # A/B with that commit

Three servers side by side, rounds interleaved so that the machine's drift
touches all three alike:

- voicebot as the Procfile runs it (``REDIS_URL`` to a private redis-server,
  ``WEB_CONCURRENCY=2``, nothing tuned): Redis, locking, dedupe, metrics,
  records all on;
- the naive Flask port (bench/naive_port.py) under the same gunicorn shape
  (gthread, 2 workers x 512 threads, voicebot's defaults);
- the article's Go handler, its callLLM asking the same model.

A server's knee is the last step before the first one it misses (p99 beyond
the model over 50 ms, or any turn shed, failed or crossed); the steps after
it are still run and printed, as the campaign's figures.

The load and the model are one compiled program (bench/loadgen, built here
with Debian's ``go``), so they take little of the two cores; the table says
how much. Scenarios: ``capacity`` (CPU per turn, an instant model, 100 calls
x 20 turns); ``knee`` (calls at 2 s think, 5 s ramp, a 0.7 s model, stepped
until p99 beyond the model passes 50 ms); ``campaign`` (1,000 calls x 6 turns
with a 0.7 s and a 1.5 s model).
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from campaign import cpu_seconds, process_tree, wait_until_settled  # noqa: E402

from voicebot_testing.processes import Gunicorn, RedisServer, free_port, procfile_command, wait_for  # noqa: E402

STEPS = (25, 50, 100, 150, 200, 300, 400, 600, 800, 1000)
KNEE_MS = 50.0
THREADS = "512"  # voicebot's default WEB_THREADS, given to the naive port too


def build(tmp: Path) -> Path:
    if shutil.which("go") is None:
        raise SystemExit("bench/knee.py needs Go to build bench/loadgen: apt-get install golang-go")
    binary = tmp / "loadgen"
    subprocess.run(["go", "build", "-o", str(binary), "."], cwd=ROOT / "bench" / "loadgen", check=True)
    return binary


class Server:
    """One of the three, started against a model, with its processes' CPU readable."""

    def __init__(self, name: str, loadgen: Path, model_url: str, tmp: Path, *, env: dict[str, str] | None = None,
                 tree: Path = ROOT, log: str = "") -> None:
        """``env``: more settings; ``tree``: another checkout of voicebot to run (an A/B); ``log``: its file name."""
        self.name = name
        self.redis: RedisServer | None = None
        env = {"ANTHROPIC_API_KEY": "test-key", "ANTHROPIC_BASE_URL": model_url, "WEB_CONCURRENCY": "2", **(env or {})}
        if name.startswith("voicebot"):  # "voicebot", or "voicebot@REF" (an A/B's other checkout)
            self.redis = RedisServer().start()
            env["REDIS_URL"] = self.redis.url
            command = procfile_command()
        else:  # through a shell, as the Procfile's is: $PORT is the free port Gunicorn() chose
            argv = ([sys.executable, "-m", "gunicorn", "-c", "/dev/null", "-k", "gthread", "-w", "2", "--threads",
                     THREADS, "-b", "127.0.0.1:$PORT", "bench.naive_port:app"] if name == "naive"
                    else [str(loadgen), "article", "-port", "$PORT"])
            command = ["sh", "-c", "exec " + " ".join(argv)]
        self.gunicorn = Gunicorn(env, command=command, cwd=tree)
        self.gunicorn.start(tmp / (log or f"{name}.log"))
        self.url = self.gunicorn.url
        assert self.gunicorn.process is not None
        self.pid = self.gunicorn.process.pid
        if name != "go":
            wait_for(lambda: len(process_tree(self.pid)) == 3, what=f"{name}'s two workers")
        wait_until_settled(process_tree(self.pid))

    def cpu(self) -> float:
        return cpu_seconds(process_tree(self.pid))

    def stop(self) -> None:
        self.gunicorn.stop()
        if self.redis:
            self.redis.stop()


class Bench:
    def __init__(self, names: list[str], trees: dict[str, Path] | None = None) -> None:
        """``trees``: the checkout a server's name runs from, where it is not this one (``--against``)."""
        self.tmp = Path(tempfile.mkdtemp(prefix="voicebot-knee-"))
        self.loadgen = build(self.tmp)
        self.names = names
        self.trees = trees or {}
        self.model: subprocess.Popen[bytes] | None = None
        self.servers: dict[str, Server] = {}
        self.latency = -1.0

    def with_model(self, latency: float) -> None:
        """Every server asks one model of this latency (they are restarted, so no state carries over)."""
        if latency == self.latency:
            return
        self.stop()
        port = free_port()
        self.model = subprocess.Popen([str(self.loadgen), "model", "-port", str(port), "-latency", str(latency)])
        wait_for(lambda: socket.create_connection(("127.0.0.1", port), timeout=0.2).close() or True, what="model")
        self.latency = latency
        self.servers = {name: Server(name, self.loadgen, f"http://127.0.0.1:{port}", self.tmp,
                                     tree=self.trees.get(name, ROOT), log=name.replace("@", "-") + ".log")
                        for name in self.names}

    def drive(self, name: str, calls: int, turns: int, think: float, ramp: float) -> dict:
        server = self.servers[name]
        assert self.model is not None
        model_cpu = cpu_seconds([self.model.pid])
        before = server.cpu()
        out = subprocess.run([str(self.loadgen), "drive", "-url", server.url, "-calls", str(calls), "-turns",
                              str(turns), "-think", str(think), "-ramp", str(ramp), "-model-latency",
                              str(self.latency)], capture_output=True, text=True, check=True).stdout
        result = json.loads(out)
        result["server_cpu_s"] = server.cpu() - before
        result["model_cpu_s"] = cpu_seconds([self.model.pid]) - model_cpu
        result["cpu_ms_per_turn"] = 1000 * result["server_cpu_s"] / max(1, result["ok"])
        return result

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()
        self.servers = {}
        if self.model:
            self.model.terminate()
            self.model.wait()
            self.model = None


def line(name: str, r: dict) -> str:
    helpers = r["generator_cpu_s"] + r["model_cpu_s"]
    return (f"| {name} | {r['calls']} | {r['ok']}/{r['turns']} | {r['errors']} | {r['shed']} | {r['crossed']} | "
            f"{r['turns_per_s']:.0f} | {r['beyond_p50_ms']:.1f} / {r['beyond_p99_ms']:.1f} | "
            f"{r['cpu_ms_per_turn']:.2f} | {100 * helpers / r['seconds']:.0f}% |")


HEADER = ("| server | calls | turns ok | errors | shed | crossed | turns/s | beyond the model p50 / p99 ms "
          "| server CPU ms/turn | load + model CPU (of one core) |\n|---|---|---|---|---|---|---|---|---|---|")


def capacity(bench: Bench, rounds: int) -> None:
    bench.with_model(0.0)
    print("\ncapacity: 100 calls x 20 turns, no think time, an instant model (CPU per turn)\n" + HEADER, flush=True)
    per_turn: dict[str, list[float]] = {name: [] for name in bench.names}
    for round_ in range(rounds):
        # Which server goes first alternates: the one measured right after another's run is not the same one.
        for name in bench.names if round_ % 2 == 0 else list(reversed(bench.names)):
            result = bench.drive(name, 100, 20, 0, 1)
            per_turn[name].append(result["cpu_ms_per_turn"])
            print(line(name, result), flush=True)
    medians = {name: sorted(values)[len(values) // 2] for name, values in per_turn.items()}
    if "voicebot" in medians and "naive" in medians:
        print("\nmedian server CPU per turn: " + ", ".join(f"{n} {v:.2f} ms" for n, v in medians.items())
              + f"; voicebot / naive = {medians['voicebot'] / medians['naive']:.2f}x", flush=True)
    for other in (n for n in medians if n.startswith("voicebot@") and "voicebot" in medians):
        print(f"A/B: voicebot {medians['voicebot']:.3f} ms against {other} {medians[other]:.3f} ms per turn: "
              f"{100 * (medians['voicebot'] / medians[other] - 1):+.1f}%", flush=True)


def knee(bench: Bench, steps: list[int]) -> None:
    bench.with_model(0.7)
    print(f"\nknee: calls x 6 turns, 2 s think, 5 s ramp, a 0.7 s model; the knee is the largest step with p99 "
          f"beyond the model within {KNEE_MS:.0f} ms\n" + HEADER, flush=True)
    knees: dict[str, int] = {}
    missed: set[str] = set()
    alive = list(bench.names)
    for calls in steps:
        for name in list(alive):
            result = bench.drive(name, calls, 6, 2, 5)
            print(line(name, result), flush=True)
            clean = result["errors"] == result["shed"] == result["crossed"] == 0
            if clean and result["beyond_p99_ms"] <= KNEE_MS and name not in missed:
                knees[name] = calls  # the knee is the last step before the first one missed
            else:
                missed.add(name)
            if result["beyond_p99_ms"] > 20 * KNEE_MS:
                alive.remove(name)  # far past its knee: the next steps would only queue longer
    print("\nknee (calls): " + ", ".join(f"{name} {knees.get(name, 0)}" for name in bench.names), flush=True)
    if knees.get("naive"):
        print(f"voicebot / naive = {knees.get('voicebot', 0) / knees['naive']:.2f}x", flush=True)


def campaign(bench: Bench) -> None:
    for latency in (0.7, 1.5):
        bench.with_model(latency)
        print(f"\ncampaign: 1,000 calls x 6 turns, 2 s think, 5 s ramp, a {latency} s model\n" + HEADER, flush=True)
        for name in bench.names:
            print(line(name, bench.drive(name, 1000, 6, 2, 5)), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenarios", nargs="*", metavar="capacity|knee|campaign",
                        help="what to run (default: all three)")
    parser.add_argument("--steps", default=",".join(map(str, STEPS)))
    parser.add_argument("--rounds", type=int, default=3, help="capacity rounds per server")
    parser.add_argument("--servers", default="voicebot,naive,go")
    parser.add_argument("--against", metavar="REF", help="also run voicebot at this commit (a git worktree): an A/B")
    args = parser.parse_args()
    unknown = set(args.scenarios) - {"capacity", "knee", "campaign"}
    if unknown:
        parser.error(f"no scenario {', '.join(sorted(unknown))}: choose capacity, knee or campaign")
    args.scenarios = args.scenarios or ["capacity", "knee", "campaign"]
    names, trees = args.servers.split(","), {}
    if args.against:
        worktree = Path(tempfile.mkdtemp(prefix="voicebot-against-")) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", str(worktree), args.against], cwd=ROOT, check=True,
                       capture_output=True)
        trees[f"voicebot@{args.against}"] = worktree
        names.insert(names.index("voicebot") + 1 if "voicebot" in names else 0, f"voicebot@{args.against}")
    bench = Bench(names, trees)
    try:
        for scenario in args.scenarios:
            if scenario == "capacity":
                capacity(bench, args.rounds)
            elif scenario == "knee":
                knee(bench, [int(s) for s in args.steps.split(",")])
            else:
                campaign(bench)
    finally:
        bench.stop()
        for worktree in trees.values():
            subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=ROOT, check=False)


if __name__ == "__main__":
    main()

"""Every shell example in the README and docs/ runs, as written, so a documented command cannot drift.

Each ```sh block runs in bash from the repository's root. The line before it
may say how (``<!-- example: ... -->``, directives separated by ``;``):

- ``not run by the suite: <why>``: it cannot run here (a Heroku account, a
  public DNS name, the suite itself); the reason is required;
- ``with voicebot serve``: ``voicebot serve`` runs first, on the defaults;
- ``serves on <port>``: the block is a server; it must answer /healthz;
- ``stdin: <text>``: what is typed into it;
- ``run with <a> => <b>``: run with ``a`` replaced by ``b`` (a smaller campaign);
- ``exits <n>``: it must exit with status ``n`` (a command that reports a failure on purpose).

Ports the docs use (8000, 8765 to 8768) become free ones, ``/tmp/``
becomes the test's own folder, and ``redis://127.0.0.1:6379/0`` the suite's
private Redis: the examples never touch what the machine runs. Whatever a
block leaves running in the background is stopped with it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from .support import ROOT, free_port, wait_for

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DOC_PORTS = ("8000", "8765", "8766", "8767", "8768")


@dataclass
class Example:
    page: str
    line: int
    code: str
    directives: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.page}:{self.line}"


def examples() -> list[Example]:
    found = []
    for page in PAGES:
        lines = page.read_text().split("\n")
        for number, text in enumerate(lines):
            if text.strip() != "```sh":
                continue
            end = next(k for k in range(number + 1, len(lines)) if lines[k].strip() == "```")
            before = next((lines[k] for k in range(number - 1, -1, -1)
                           if lines[k].strip() and not lines[k].startswith("<!-- test-command")), "")
            marker = re.fullmatch(r"<!-- example(?::\s*(.*?))?\s*-->", before.strip())
            directives = parse_directives(marker.group(1) or "") if marker else {}
            indent = len(text) - len(text.lstrip())
            code = "\n".join(line[indent:] for line in lines[number + 1:end])
            found.append(Example(page.relative_to(ROOT).as_posix(), number + 2, code, directives))
    return found


def parse_directives(text: str) -> dict[str, str]:
    if text.startswith("not run by the suite"):
        return {"not run": text.partition(":")[2].strip()}  # the reason, whatever it holds
    directives = {}
    for part in (p.strip() for p in text.split(";") if p.strip()):
        for key in ("stdin:", "serves on ", "with ", "run with ", "exits "):
            if part.startswith(key):
                directives[key.rstrip(": ")] = part.removeprefix(key).strip()
                break
        else:
            raise ValueError(f"unknown example directive {part!r}")
    return directives


EXAMPLES = examples()


def test_every_example_not_run_says_why():
    for example in EXAMPLES:
        if "not run" in example.directives:
            assert len(example.directives["not run"]) > 10, f"{example.name} is not run and says no reason"
    assert sum("not run" not in e.directives for e in EXAMPLES) >= 6  # most of them do run


@pytest.mark.parametrize("example", [e for e in EXAMPLES if "not run" not in e.directives],
                         ids=[e.name for e in EXAMPLES if "not run" not in e.directives])
def test_the_example_runs(example, tmp_path, redis_url):
    ports = {port: str(free_port()) for port in DOC_PORTS}
    code = example.code
    if "run with" in example.directives:
        old, new = (side.strip() for side in example.directives["run with"].split("=>"))
        assert old in code, f"{example.name}: nothing to replace ({old!r})"
        code = code.replace(old, new)
    for port, free in ports.items():
        code = re.sub(rf"(?<![0-9]){port}(?![0-9])", free, code)
    code = code.replace("/tmp/", f"{tmp_path}/").replace("redis://127.0.0.1:6379/0", redis_url)
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("REDIS_", "ANTHROPIC_", "WEBHOOK_", "VOIPBIN_", "TWILIO_", "TOOLS_", "PORT"))}
    env["HOME"] = str(tmp_path)
    server = None
    try:
        if example.directives.get("with") == "voicebot serve":
            server = subprocess.Popen([str(ROOT / ".venv/bin/voicebot"), "serve", "--port", ports["8000"]], cwd=ROOT,
                                      env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True)
            wait_for(lambda: requests.get(f"http://127.0.0.1:{ports['8000']}/healthz", timeout=1).ok, timeout=30,
                     what="voicebot serve")
        # Output to a file, not a pipe: a server the block leaves in the background keeps a pipe open.
        output = tmp_path / "output.txt"
        with output.open("w") as out_file:
            block = subprocess.Popen(["bash", "-e", "-o", "pipefail", "-c", code], cwd=ROOT, env=env,
                                     stdin=subprocess.PIPE, stdout=out_file, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        try:
            if "serves on" in example.directives:
                port = ports[example.directives["serves on"].split()[-1]]
                wait_for(lambda: requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok, timeout=30,
                         what=f"{example.name} serving")
                return
            assert block.stdin is not None
            typed = example.directives.get("stdin", "")
            block.stdin.write(typed + "\n" if typed else "")
            block.stdin.close()
            block.wait(180)
            out = output.read_text()
            wanted = int(example.directives.get("exits", "0"))
            assert block.returncode == wanted, f"{example.name} exited {block.returncode}:\n{code}\n---\n{out}"
            assert "Traceback" not in out, out
        finally:
            _stop(block)
    finally:
        if server is not None:
            _stop(server)


def _stop(process: subprocess.Popen) -> None:
    """The process and everything it left running in the background (its own session)."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)


def test_the_pages_say_where_servers_listen_by_default():
    # The docs' ports are the ones the code listens on by default, so the examples mean what they say.
    from voicebot.cli import build_parser
    from voicebot.platforms import DEFAULTS

    assert DEFAULTS["PORT"] == 8000
    parser = build_parser()
    assert parser.parse_args(["fake-llm"]).port == 8765 and parser.parse_args(["demo-tools"]).port == 8767
    assert parser.parse_args(["fake-voipbin"]).port == 8766
    assert all(Path(p).exists() for p in PAGES)

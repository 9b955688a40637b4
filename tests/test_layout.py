"""The package's shape stays livable: no import loop, no module past 450 lines, one key for the shared objects.

Read from the source, as a newcomer's tools would read it: every import counts, function-local and
type-checking ones too.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

from .support import ROOT

PACKAGES = ("voicebot", "voicebot_testing")
MAX_LINES = 450


def _modules(package: str) -> dict[str, Path]:
    found = {}
    for path in (ROOT / package).rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's own modules ``name`` imports, anywhere in its source."""
    targets = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            wanted = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = name.split(".") if is_package else name.split(".")[:-1]
            if node.level:
                base = base[:len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            wanted = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in known else prefix for a in node.names]
        else:
            continue
        for target in wanted:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                targets.add(target)
    return targets


def _loops(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components of more than one node (Tarjan's)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.add(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in list(graph):
        if node not in index:
            visit(node)
    return found


def _graphs() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    known = {name: path for package in PACKAGES for name, path in _modules(package).items()}
    files = {name: _imports(name, path, known) for name, path in known.items()}
    parts: dict[str, set[str]] = {}
    for name, targets in files.items():
        if not name.startswith("voicebot.") or name.startswith("voicebot_testing"):
            continue
        part = name.split(".")[1]
        for target in targets:
            if target.startswith("voicebot.") and target.split(".")[1] != part:
                parts.setdefault(part, set()).add(target.split(".")[1])
    return files, parts


def test_no_module_imports_itself_back_through_others():
    files, parts = _graphs()
    assert _loops(files) == []
    assert _loops(parts) == []  # among voicebot's first-level parts (config, conversation, llm, ...)


def test_no_module_is_longer_than_a_newcomer_can_hold():
    long = {str(path.relative_to(ROOT)): n for package in PACKAGES for path in (ROOT / package).rglob("*.py")
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_the_shared_objects_are_reached_through_the_runtime():
    uses = [f"{path.relative_to(ROOT)}: {line.strip()}" for path in (ROOT / "voicebot").rglob("*.py")
            for line in path.read_text().splitlines() if re.search(r"extensions\[", line)]
    assert len(uses) <= 2, uses  # voicebot/runtime.py keeps it and reads it back; nothing else does


def test_checking_the_settings_loads_no_metrics():
    """gunicorn's master checks the settings before a worker has set up the metrics' directory."""
    code = ("import sys; from voicebot.platforms import load_config; load_config({}); "
            "sys.exit('prometheus_client' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_the_production_image_carries_no_trial_tools_and_their_commands_say_so(tmp_path):
    """The Dockerfile copies voicebot/ alone; there, `voicebot simulate` says in one line what is missing."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY voicebot ./voicebot" in dockerfile and "voicebot_testing" not in dockerfile
    assert "voicebot_testing" in (ROOT / ".dockerignore").read_text().split()
    image = tmp_path / "app"
    image.mkdir()
    (image / "voicebot").symlink_to(ROOT / "voicebot")  # what the image has: the service, nothing beside it
    # -S: no site-packages, so no editable install can map voicebot_testing in; the command needs none.
    code = f"import sys; sys.path.insert(0, {str(image)!r}); from voicebot.cli import main; " \
           "sys.exit(main(['simulate', 'http://127.0.0.1:9']))"
    done = subprocess.run([sys.executable, "-S", "-c", code], cwd=image, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 2, done.stderr
    assert "voicebot_testing" in done.stderr and len(done.stderr.strip().splitlines()) == 1

"""The layer table of DESIGN.md, checked: imports that would break the viewer or the shim."""
from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PKG = ROOT / "segwatch"

# package (or module) -> top-level modules it must never import (anywhere in the file)
FORBIDDEN = {
    "core": {"textual", "socket", "subprocess", "psutil"},
    "shim": {"textual", "psutil"},
    "protocol.py": {"torch", "textual"},
    "supervisor": {"textual", "torch"},
    "runs": {"textual", "torch"},
    "tui": {"torch"},
}


def _imports(path: pathlib.Path) -> list[tuple[int, str, bool]]:
    """(line, top-level module, at module level?) for every import in a file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    top_level = {id(n) for n in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            out.append((node.lineno, name.split(".")[0], id(node) in top_level))
    return out


def _files(place: str) -> list[pathlib.Path]:
    p = PKG / place
    return [p] if p.is_file() else sorted(p.rglob("*.py"))


@pytest.mark.parametrize("place", sorted(FORBIDDEN))
def test_layer_imports(place):
    bad = []
    for f in _files(place):
        for line, mod, _ in _imports(f):
            if mod in FORBIDDEN[place]:
                bad.append(f"{f.relative_to(ROOT)}:{line} imports {mod}")
    assert not bad, "\n".join(bad)


def test_core_imports_torch_only_lazily():
    bad = [
        f"{f.relative_to(ROOT)}:{line}"
        for f in _files("core")
        for line, mod, top in _imports(f)
        if mod == "torch" and top
    ]
    assert not bad, "torch imported at module level in core: " + ", ".join(bad)


def test_viewer_side_imports_without_torch():
    """A laptop attached over SSH has no torch: the TUI, core and supervisor must import."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import segwatch, segwatch.protocol, segwatch.config\n"
        "import segwatch.core, segwatch.core.state, segwatch.core.metrics\n"
        "import segwatch.runs, segwatch.supervisor, segwatch.tui, segwatch.cli\n"
        "import importlib, pkgutil\n"
        "for pkg in ('segwatch.core', 'segwatch.runs', 'segwatch.supervisor', 'segwatch.tui'):\n"
        "    m = importlib.import_module(pkg)\n"
        "    for info in pkgutil.walk_packages(m.__path__, pkg + '.'):\n"
        "        importlib.import_module(info.name)\n"
        "print('ok')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().endswith("ok")


# ---------------------------------------------------------------------- the runs layer
#: A run directory's files: only segwatch/runs/ names them as paths (issue 18).
RUN_FILES = ("events.jsonl", "events.shim.jsonl", "meta.json", "report.json", "supervisor.log")
#: Modules outside the runs layer allowed to name a run file as a path, and why.
RUN_FILE_EXEMPT = {
    # the shim runs inside the training process and writes its own fallback file there;
    # it imports no supervisor-side layer (test_shim_fallback_name_matches_runs checks the name)
    "segwatch/shim/emitter.py": {"events.shim.jsonl"},
}


def _names_run_file(value: str) -> str | None:
    for name in RUN_FILES:
        if value == name or value.endswith("/" + name):
            return name
    return None


def run_file_paths(source: str) -> list[tuple[int, str]]:
    """(line, file name) for each string constant used as a path to a run directory's file:
    an operand of ``/`` (``run_dir / "meta.json"``), a positional argument of a call
    (``open(...)``, ``Path(...)``, ``os.path.join(d, ...)``), a piece of an f-string
    (``f"{d}/events.jsonl"``) or a module-level constant (``NAME = "events.jsonl"``).
    Docstrings, keyword arguments (``help=...``), comparisons and returned labels that
    merely mention a name are not paths."""
    tree = ast.parse(source)
    spots: list[ast.AST] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            spots += [node.left, node.right]
        elif isinstance(node, ast.Call):
            spots += list(node.args)
        elif isinstance(node, ast.JoinedStr):
            spots += list(node.values)
    spots += [n.value for n in tree.body if isinstance(n, (ast.Assign, ast.AnnAssign)) and n.value is not None]
    out = []
    for node in spots:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            name = _names_run_file(node.value)
            if name:
                out.append((node.lineno, name))
    return sorted(set(out))


def test_run_file_detector_flags_paths_not_prose():
    flagged = run_file_paths(
        '''"""A docstring naming events.jsonl and meta.json is prose."""
import os
from pathlib import Path
FALLBACK = "events.shim.jsonl"
def f(d, ap):
    ap.add_argument("x", help="meta.json")
    a = Path(d) / "meta.json"
    b = open(os.path.join(d, "events.jsonl"), "rb")
    c = Path(f"{d}/report.json")
    if d == "meta.json":
        return "meta.json"
''')
    assert flagged == [(4, "events.shim.jsonl"), (7, "meta.json"), (8, "events.jsonl"), (9, "report.json")]


def test_only_the_runs_layer_names_run_files():
    """No module outside segwatch/runs/ opens or builds the path of a run directory's
    files: everything that reads or writes them goes through ``segwatch.runs``."""
    bad = []
    for f in sorted(PKG.rglob("*.py")):
        rel = f.relative_to(ROOT).as_posix()
        if rel.startswith("segwatch/runs/"):
            continue
        for line, name in run_file_paths(f.read_text()):
            if name not in RUN_FILE_EXEMPT.get(rel, ()):
                bad.append(f"{rel}:{line} names {name} (use segwatch.runs)")
    assert not bad, "\n".join(bad)


def test_shim_fallback_name_matches_runs():
    from segwatch.runs import SHIM_EVENTS
    from segwatch.shim.emitter import FALLBACK_NAME

    assert FALLBACK_NAME == SHIM_EVENTS

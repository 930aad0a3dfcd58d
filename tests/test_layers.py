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
        "import segwatch.supervisor, segwatch.tui, segwatch.cli\n"
        "import importlib, pkgutil\n"
        "for pkg in ('segwatch.core', 'segwatch.supervisor', 'segwatch.tui'):\n"
        "    m = importlib.import_module(pkg)\n"
        "    for info in pkgutil.walk_packages(m.__path__, pkg + '.'):\n"
        "        importlib.import_module(info.name)\n"
        "print('ok')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().endswith("ok")

"""The fast set (``pytest -m "not slow"``) reaches every module of segwatch/ and adapters/.

Static, so that it costs a fraction of a second and needs no run of the fast set: a test file
counts when it holds at least one test not marked slow; what it imports at module level, in its
fixtures and helpers, and in its fast tests counts, and so does what those modules import at
their own module level (segwatch's lazy, in-function imports do not: they may never run).
Modules run only as a child process (``python -m segwatch.shim ...``) do not count either:
those tests are slow by nature.
"""
from __future__ import annotations

import ast
import functools
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
# package dir -> import name (pyproject's [tool.setuptools] package-dir)
PACKAGE_DIRS = {ROOT / "segwatch": "segwatch", ROOT / "adapters": "segwatch.adapters"}
# entry points and scripts: executed as ``python -m`` / a training script, never imported
NOT_IMPORTED = {"__main__"}
SCRIPTS = {"segwatch.demo.train"}
# imported only inside a function of a module the fast set reaches, and called by a fast test:
# module -> (the module whose function imports it, the fast test file that calls that function)
LAZY = {"segwatch.core.report": ("segwatch.core.state", "test_report")}


@functools.lru_cache(maxsize=None)
def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def module_files() -> dict[str, Path]:
    """Import name -> file, for every module segwatch installs."""
    out: dict[str, Path] = {}
    for pkg_dir, pkg in PACKAGE_DIRS.items():
        for f in sorted(pkg_dir.rglob("*.py")):
            parts = list(f.relative_to(pkg_dir).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([pkg, *parts])] = f
    return out


def _is_slow_mark(node: ast.AST) -> bool:
    """``pytest.mark.slow``, called or not, alone or in a list."""
    if isinstance(node, (ast.List, ast.Tuple)):
        return any(_is_slow_mark(n) for n in node.elts)
    if isinstance(node, ast.Call):
        node = node.func
    return isinstance(node, ast.Attribute) and node.attr == "slow"


def _imported_names(nodes, package: str | None = None) -> set[str]:
    """Dotted names imported by ``import``/``from`` statements among ``nodes`` (walked);
    ``from a import b`` yields both ``a`` and ``a.b`` (b may be a module)."""
    names: set[str] = set()
    for stmt in nodes:
        for n in ast.walk(stmt):
            if isinstance(n, ast.Import):
                for a in n.names:
                    parts = a.name.split(".")
                    names.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
            elif isinstance(n, ast.ImportFrom):
                base = n.module or ""
                if n.level:
                    if package is None:
                        continue
                    anchor = package.split(".")
                    anchor = anchor[:len(anchor) - (n.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                parts = base.split(".")
                names.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
                names.update(f"{base}.{a.name}" for a in n.names)
    return names


def _module_level(tree: ast.Module) -> list[ast.stmt]:
    """Statements that run at import: everything but function and class bodies."""
    out = []
    for stmt in tree.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.extend(stmt.decorator_list)
        else:
            out.append(stmt)
    return out


def fast_test_imports() -> dict[str, set[str]]:
    """Test file stem -> names it imports on behalf of fast tests (empty when all are slow)."""
    out: dict[str, set[str]] = {}
    for f in sorted(TESTS.rglob("test_*.py")):
        tree = parse(f)
        file_slow = any(isinstance(s, ast.Assign) and any(getattr(t, "id", None) == "pytestmark" for t in s.targets)
                        and _is_slow_mark(s.value) for s in tree.body)
        tests, helpers = [], []
        for stmt in tree.body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                (tests if stmt.name.startswith("test") else helpers).append(stmt)
            elif isinstance(stmt, ast.ClassDef) and stmt.name.startswith("Test"):
                if not any(_is_slow_mark(d) for d in stmt.decorator_list):
                    tests.extend(s for s in stmt.body if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef)))
        fast = [t for t in tests if not any(_is_slow_mark(d) for d in t.decorator_list)]
        if file_slow or not fast:
            out[f.stem] = set()
            continue
        out[f.stem] = _imported_names(_module_level(tree) + helpers + fast)
    return out


def covered_modules() -> set[str]:
    files = module_files()
    per_test = fast_test_imports()
    module_level_imports = {}
    for name, f in files.items():
        package = name if f.name == "__init__.py" else name.rpartition(".")[0]
        module_level_imports[name] = _imported_names(_module_level(parse(f)), package)
    # a fast file that imports another test file (``from test_state import ...``) runs its module level
    todo = set().union(*per_test.values())
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name.startswith("test_") and (TESTS / f"{name}.py").exists():
            tree = parse(TESTS / f"{name}.py")
            todo |= _imported_names(_module_level(tree))
        todo |= module_level_imports.get(name, set())
        # importing a.b.c runs a and a.b first
        parts = name.split(".")
        todo |= {".".join(parts[:i]) for i in range(1, len(parts))}
    covered = seen & set(files)
    for name, (importer, test_file) in LAZY.items():
        lazy = _imported_names([parse(files[importer])], importer.rpartition(".")[0])
        if importer in covered and name in lazy and per_test.get(test_file):
            covered.add(name)
    return covered


def test_every_module_is_imported_by_a_fast_test():
    wanted = {m for m in module_files() if m.rpartition(".")[2] not in NOT_IMPORTED and m not in SCRIPTS}
    missing = sorted(wanted - covered_modules())
    assert not missing, f"no test outside `-m slow` imports: {missing}"


def test_the_check_sees_slow_marks_and_lazy_imports(tmp_path):
    """The parser itself: a slow test's imports and segwatch's in-function imports do not count."""
    src = ("import pytest\n"
           "pytestmark = [pytest.mark.slow]\n"
           "def test_a():\n    import x.y\n")
    assert _is_slow_mark(ast.parse(src).body[1].value)
    tree = ast.parse("import a.b\nfrom .c import d\ndef f():\n    import lazy\n")
    assert _imported_names(_module_level(tree), "pkg.sub") == {"a", "a.b", "pkg", "pkg.sub", "pkg.sub.c", "pkg.sub.c.d"}
    fn = ast.parse("@pytest.mark.slow\ndef test_b():\n    import z\n").body[0]
    assert _is_slow_mark(fn.decorator_list[0])

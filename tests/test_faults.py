"""The fault zoo through the real CLI.

Every training in ``tests/faults/EXPECTED.yaml`` runs as a user would run it
(``python -m segwatch run --headless --report ... --config CFG SCRIPT``); the report must
name the expected finding ids.  Healthy trainings must raise no error-level finding and
their own printed mIoU must rise.  The structural checks at the top are fast; the CLI
runs are marked ``slow``.
"""
from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
FAULTS = ROOT / "tests" / "faults"
TABLE = yaml.safe_load((FAULTS / "EXPECTED.yaml").read_text())
MIOU_RE = re.compile(r"mIoU:\s*([0-9]+(?:\.[0-9]+)?)")


def _module(name: str) -> ast.Module:
    return ast.parse((FAULTS / name).read_text())


def _fault_step(tree: ast.Module):
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "FAULT_STEP" for t in node.targets):
            return ast.literal_eval(node.value)
    return None


# -- structure (fast) ---------------------------------------------------------------------

def test_every_script_is_listed_and_every_entry_exists():
    scripts = {p.name for p in FAULTS.glob("*.py") if not p.name.startswith("_")}
    assert scripts == set(TABLE)
    for name, spec in TABLE.items():
        assert (FAULTS / spec["config"]).is_file(), name
        assert isinstance(spec["healthy"], bool), name
        assert spec["healthy"] == (not spec["expected"]), name


def test_every_finding_id_but_dist_has_a_fault_script():
    from segwatch.core.findings import FINDING_IDS

    covered = {i for spec in TABLE.values() for i in spec["expected"]}
    wanted = {i for i in FINDING_IDS if not i.startswith("dist.")}
    assert covered - set(FINDING_IDS) == set(), "EXPECTED.yaml names unknown ids"
    # the late zoo (tests/faults_late, tests/test_faults_late.py) covers the slow-burn ids
    # and the GPU-side scripts (tests/gpu_scripts, tests/test_gpu_cli.py) the resource.* / perf.* ids
    late = " ".join(ast.get_docstring(ast.parse(p.read_text())) or "" for p in
                    [*(ROOT / "tests" / "faults_late").glob("*.py"), *(ROOT / "tests" / "gpu_scripts").glob("*.py")])
    covered |= {i for i in wanted if i in late}
    assert wanted - covered == set()
    assert len([n for n, s in TABLE.items() if s["healthy"]]) >= 3


@pytest.mark.parametrize("name", sorted(TABLE))
def test_script_documents_its_fault(name):
    tree = _module(name)
    doc = ast.get_docstring(tree)
    assert doc, f"{name} has no module docstring"
    step = _fault_step(tree)
    assert isinstance(step, int) and step >= 0, f"{name}: FAULT_STEP constant missing"
    for fid in TABLE[name]["expected"]:
        assert fid in doc, f"{name}: docstring does not name {fid}"
    src = (FAULTS / name).read_text()
    imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = [a.name for n in imports for a in n.names] + [n.module or "" for n in imports if isinstance(n, ast.ImportFrom)]
    assert not any(x.split(".")[0] == "segwatch" for x in names), f"{name} must not know segwatch"
    assert "set_num_threads" in src or "seed_all" in src


def test_configs_load():
    from segwatch.config import load_config

    for cfg in sorted({spec["config"] for spec in TABLE.values()}):
        c = load_config(FAULTS / cfg)
        assert c.dataset.num_classes in (13, 37)


# -- through the CLI (slow) ------------------------------------------------------------------

def _run(name: str, tmp_path: Path) -> tuple[dict, str, subprocess.CompletedProcess]:
    spec = TABLE[name]
    report = tmp_path / "r.json"
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "segwatch", "run", "--headless", "--report", str(report),
           "--run-dir", str(run_dir), "--config", str(FAULTS / spec["config"]), str(FAULTS / name)]
    # generous: on a loaded 2-core machine an AMP script takes several times its idle time
    proc = subprocess.run(cmd, cwd=str(ROOT), capture_output=True, text=True, timeout=240)
    assert report.exists(), f"no report; rc={proc.returncode}\n{proc.stderr[-3000:]}"
    rep = json.loads(report.read_text())
    stdout_log = run_dir / "stdout.log"
    out = stdout_log.read_text(errors="replace") if stdout_log.exists() else proc.stdout
    return rep, out, proc


def _describe(rep: dict) -> str:
    return "; ".join(f"{f['id']}({f['severity']}@{f.get('first_step')})" for f in rep.get("findings", [])) or "none"


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", sorted(TABLE))
def test_fault_is_found(name, tmp_path):
    spec = TABLE[name]
    rep, out, proc = _run(name, tmp_path)
    assert rep.get("schema") == "segwatch.report/1"
    ids = {f["id"] for f in rep.get("findings", [])}
    if spec["healthy"]:
        errors = [f["id"] for f in rep.get("findings", []) if f["severity"] == "error"]
        assert errors == [], f"healthy run raised errors: {_describe(rep)}"
        assert rep.get("exit_code") == 0
        mious = [float(m) for m in MIOU_RE.findall(out)]
        assert len(mious) >= 3, f"script printed no mIoU:\n{out[-2000:]}"
        assert mious[-1] > mious[0] + 10, f"mIoU did not rise: {mious}"
    else:
        missing = [i for i in spec["expected"] if i not in ids]
        assert not missing, f"missing {missing}; found: {_describe(rep)}"


# -- the bundled demo -------------------------------------------------------------------------

def test_demo_is_self_contained():
    import segwatch.demo as demo

    src = demo.TRAIN_SCRIPT.read_text()
    tree = ast.parse(src)
    mods = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    mods += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not any(m.split(".")[0] in ("segwatch", "tests", "_synth") for m in mods)
    assert demo.CONFIG.is_file()
    for f in demo.FAULTS:
        assert f in src


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_demo_trains_alone():
    import segwatch.demo as demo

    proc = subprocess.run([sys.executable, str(demo.TRAIN_SCRIPT), "--fault", "none", "--epochs", "3",
                           "--iters-per-epoch", "40"], capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, proc.stderr[-2000:]
    mious = [float(m) for m in MIOU_RE.findall(proc.stdout)]
    assert len(mious) == 3 and mious[-1] > mious[0] + 5, mious


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_demo_collapse_is_caught_and_killed(tmp_path):
    report = tmp_path / "r.json"
    cmd = [sys.executable, "-m", "segwatch", "demo", "--headless", "--on-collapse", "kill",
           "--report", str(report), "--run-dir", str(tmp_path / "run"), "--", "--epochs", "4"]
    proc = subprocess.run(cmd, cwd=str(ROOT), capture_output=True, text=True, timeout=170)
    assert report.exists(), proc.stderr[-3000:]
    rep = json.loads(report.read_text())
    ids = {f["id"] for f in rep["findings"]}
    assert "pred.collapse" in ids, _describe(rep)
    assert rep["action"] and rep["action"]["kind"] == "kill", rep["action"]
    assert rep["action"]["finding"] in ("pred.collapse", "metric.single_class_signature"), rep["action"]
    assert rep["exit_code"] != 0
    # the demo showed what it meant to: it exits 0, and its last line gives the training's status
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("[segwatch] demo done") and f"exit status: {rep['exit_code']}" in last, last

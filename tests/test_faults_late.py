"""The late fault zoo through the real CLI (acceptance tests of issues 14 and 15).

Every entry of ``tests/faults_late/EXPECTED.yaml`` runs as a user would run it, at
segwatch's default settings (the configs name the dataset only, no ``--debug``):

    python -m segwatch run --headless --report R.json --run-dir D --config CFG SCRIPT [-- ARGS]

- a fault's expected ids must be raised, each first within ``window`` steps of the
  script's ``FAULT_STEP`` (and, for faults that begin late, not before it);
- a healthy trap or twin raises no error-level finding and none of the faults' ids, and
  its own printed mIoU ends high;
- over all the zoo's runs, the report's findings and checklist never contradict the
  confusion matrix of the evaluation they speak of.

The trainings take ~10-40 s each on a loaded 2-core CPU.  They run two at a time in the
background from the first test on (one module fixture), each test waits for its own.
``SEGWATCH_LATE_ZOO_KEEP=DIR`` keeps the reports and run directories under DIR.
"""
from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
ZOO = ROOT / "tests" / "faults_late"
TABLE = yaml.safe_load((ZOO / "EXPECTED.yaml").read_text())
FAULTS = sorted(n for n, s in TABLE.items() if not s["healthy"])
HEALTHY = sorted(n for n, s in TABLE.items() if s["healthy"])
FAULT_IDS = {i for n in FAULTS for item in TABLE[n]["expected"] for i in ([item] if isinstance(item, str) else item)}
MIOU_RE = re.compile(r"mIoU:\s*([0-9]+(?:\.[0-9]+)?)")
RUN_TIMEOUT = 300  # seconds per training, generous for a loaded CI machine
# tests that read every entry's run (the fixture then runs the whole zoo)
WHOLE_ZOO_TESTS = ("test_reports_agree_with_their_confusion_matrices",
                   "test_every_probe_samples_at_the_floor_over_the_whole_run")


def _script(name: str) -> Path:
    return ZOO / TABLE[name].get("script", name)


def fault_step(path: Path) -> int | None:
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "FAULT_STEP" for t in node.targets):
            return ast.literal_eval(node.value)
    return None


def _alternatives(item) -> list[str]:
    return [item] if isinstance(item, str) else list(item)


# -- structure (fast) ---------------------------------------------------------------------

def test_zoo_is_complete_and_listed():
    scripts = {p.name for p in ZOO.glob("*.py") if not p.name.startswith("_")}
    assert scripts == {TABLE[n].get("script", n) for n in TABLE}
    assert len(FAULTS) >= 8 and len([n for n in HEALTHY if n.startswith("healthy_")]) >= 4
    from segwatch.core.findings import FINDING_IDS

    assert FAULT_IDS - set(FINDING_IDS) == set(), "EXPECTED.yaml names unknown ids"
    for name, spec in TABLE.items():
        assert (ZOO / spec["config"]).is_file(), name
        assert spec["healthy"] == (not spec["expected"]), name
        if not spec["healthy"]:
            assert spec["window"] in (32, 64), name


@pytest.mark.parametrize("name", sorted(TABLE))
def test_script_documents_its_fault(name):
    path = _script(name)
    tree = ast.parse(path.read_text())
    doc = ast.get_docstring(tree) or ""
    step = fault_step(path)
    assert isinstance(step, int) and step >= 0, f"{name}: FAULT_STEP missing"
    if name.startswith("late_") and not TABLE[name]["healthy"]:
        assert step >= 300, f"{name}: a late fault begins at step >= 300"
    for item in TABLE[name]["expected"]:
        assert any(i in doc for i in _alternatives(item)), f"{name}: docstring does not name {item}"
    mods = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    mods += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not any(m.split(".")[0] == "segwatch" for m in mods), f"{name} must not know segwatch"
    if "--healthy" in TABLE[name].get("args", []):
        assert "HEALTHY" in path.read_text()


def test_zoo_trainings_are_long_enough():
    sys.path.insert(0, str(ZOO))
    try:
        import _late
    finally:
        sys.path.remove(str(ZOO))
    assert _late.TOTAL_STEPS >= 600
    for name in TABLE:
        assert "TOTAL_STEPS" in _script(name).read_text(), name


# -- through the CLI (slow) ------------------------------------------------------------------

def run_entry(name: str, workdir: Path) -> dict:
    spec = TABLE[name]
    out = workdir / name
    shutil.rmtree(out, ignore_errors=True)  # a kept folder from an earlier run holds a stale report
    out.mkdir(parents=True)
    report, run_dir = out / "r.json", out / "run"
    cmd = [sys.executable, "-m", "segwatch", "run", "--headless", "--report", str(report),
           "--run-dir", str(run_dir), "--config", str(ZOO / spec["config"]), str(_script(name))]
    if spec.get("args"):
        cmd += ["--", *spec["args"]]
    try:
        proc = subprocess.run(cmd, cwd=str(ROOT), capture_output=True, text=True, timeout=RUN_TIMEOUT)
        rc, err = proc.returncode, proc.stderr
    except subprocess.TimeoutExpired as e:
        rc, err = "timeout", str(e.stderr or "")
    rep = json.loads(report.read_text()) if report.exists() else None
    log = run_dir / "stdout.log"
    events = []
    ev_path = run_dir / "events.jsonl"
    if ev_path.exists():
        for line in ev_path.read_text(errors="replace").splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                pass
    return {"name": name, "rc": rc, "stderr": err[-3000:], "report": rep, "events": events,
            "stdout": log.read_text(errors="replace") if log.exists() else ""}


class ZooRuns:
    """Runs the selected entries two at a time in the background, in test order."""

    def __init__(self, names: list[str], workdir: Path):
        self.workdir = workdir
        self.pool = ThreadPoolExecutor(max_workers=2)
        self.futures = {n: self.pool.submit(run_entry, n, workdir) for n in names}

    def get(self, name: str) -> dict:
        if name not in self.futures:
            self.futures[name] = self.pool.submit(run_entry, name, self.workdir)
        return self.futures[name].result()

    def close(self):
        for f in self.futures.values():
            f.cancel()
        self.pool.shutdown(wait=True)


@pytest.fixture(scope="module")
def zoo(request, tmp_path_factory):
    selected = [it.callspec.params["name"] for it in request.session.items
                if it.module is request.module and hasattr(it, "callspec")
                and "name" in it.callspec.params and it.get_closest_marker("slow")]
    if any(it.module is request.module and it.name in WHOLE_ZOO_TESTS for it in request.session.items):
        selected += sorted(TABLE)
    keep = os.environ.get("SEGWATCH_LATE_ZOO_KEEP")  # a folder to keep the run directories in
    workdir = Path(keep) if keep else tmp_path_factory.mktemp("late_zoo")
    runs = ZooRuns(list(dict.fromkeys(selected)), workdir)
    yield runs
    runs.close()


def _describe(rep: dict | None) -> str:
    if rep is None:
        return "no report"
    return "; ".join(f"{f['id']}({f['severity']}@{f.get('first_step')})" for f in rep.get("findings", [])) or "none"


def _first_steps(rep: dict) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for f in rep.get("findings", []):
        out.setdefault(f["id"], f.get("first_step"))
    return out


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", FAULTS)
def test_late_fault_is_found_in_time(name, zoo):
    spec = TABLE[name]
    res = zoo.get(name)
    rep = res["report"]
    assert rep is not None, f"no report; rc={res['rc']}\n{res['stderr']}"
    onset = fault_step(_script(name))
    found = _first_steps(rep)
    problems = []
    for item in spec["expected"]:
        hits = [i for i in _alternatives(item) if i in found]
        if not hits:
            problems.append(f"{item} not raised")
            continue
        steps = [found[i] for i in hits if found[i] is not None]
        if not steps:
            problems.append(f"{hits} raised without a first_step")
            continue
        first = min(steps)
        if first - onset > spec["window"]:
            problems.append(f"{hits} first at step {first}, {first - onset} steps after onset {onset} "
                            f"(window {spec['window']})")
        if name.startswith("late_") and first < onset:
            problems.append(f"{hits} first at step {first}, before the fault began ({onset})")
    assert not problems, "; ".join(problems) + f" | found: {_describe(rep)}"


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", HEALTHY)
def test_healthy_trap_stays_quiet(name, zoo):
    spec = TABLE[name]
    res = zoo.get(name)
    rep = res["report"]
    assert rep is not None, f"no report; rc={res['rc']}\n{res['stderr']}"
    assert rep.get("exit_code") == 0, res["stderr"]
    mious = [float(m) for m in MIOU_RE.findall(res["stdout"])]
    assert len(mious) >= 3 and mious[-1] >= spec["min_miou"], f"the training itself failed: {mious}"
    errors = [f["id"] for f in rep["findings"] if f["severity"] == "error"]
    faults = [f["id"] for f in rep["findings"] if f["id"] in FAULT_IDS]
    assert errors == [] and faults == [], f"healthy run raised: {_describe(rep)}"


# -- findings and checklist agree with segwatch's own confusion matrices ----------------------

def _eval_matrices(events: list[dict]) -> dict[int, np.ndarray]:
    """index -> predicted-pixel count per class (columns of the matrix), ranks merged."""
    out: dict[int, np.ndarray] = {}
    for ev in events:
        if ev.get("type") != "eval" or not isinstance(ev.get("matrix"), list) or ev.get("aborted"):
            continue
        col = np.asarray(ev["matrix"], dtype=np.int64).sum(axis=0)
        i = int(ev.get("index", len(out)))
        out[i] = out[i] + col if i in out else col
    return out


def _eval_steps(events: list[dict]) -> dict[int, int]:
    return {int(ev.get("index", 0)): int(ev.get("step") or 0) for ev in events if ev.get("type") == "eval"}


def contradictions(rep: dict, events: list[dict]) -> list[str]:
    """What a report says about predicted classes that its own evaluation matrices deny.

    A count or list of predicted classes must match the matrix's non-empty prediction
    columns; classes the report sets apart as stray pixels (evidence ``stray`` /
    ``stray_classes``, or "N ... stray" in a checklist line) count as disclosed."""
    cols = _eval_matrices(events)
    steps = _eval_steps(events)
    out = []
    for f in rep.get("findings", []):
        e = f.get("evidence") or {}
        idx = e.get("eval_index")
        if idx is None and str(e.get("source", "")).startswith("script"):
            # built on the printed mIoU: the evaluation of that step must not deny it
            at = e.get("step", f.get("first_step"))
            cands = [i for i, s in steps.items() if at is not None and s <= at and i in cols]
            idx = max(cands, key=lambda i: steps[i]) if cands else None
        if idx is None or int(idx) not in cols:
            continue
        col = cols[int(idx)]
        predicted = {int(c) for c in np.flatnonzero(col)}
        where = f"{f['id']} (eval {idx})"
        c = e.get("class")
        if c is not None and f["id"] in ("pred.collapse", "metric.single_class_signature"):
            if int(c) not in predicted or int(col.argmax()) != int(c):
                out.append(f"{where} names class {c} as dominant; the matrix predicts "
                           f"{sorted(predicted)} with class {int(col.argmax())} largest")
            elif e.get("share") is not None and abs(float(e["share"]) - col[int(c)] / col.sum()) > 0.01:
                out.append(f"{where} share {e['share']} vs the matrix's {col[int(c)] / col.sum():.4f}")
        # classes the evidence sets apart as stray pixels are disclosed, not denied
        # (a list of class ids, or a count)
        raw = e.get("stray_classes", e.get("stray"))
        stray = {int(x) for x in raw} if isinstance(raw, list) else set()
        n_stray = len(stray) if isinstance(raw, list) else int(raw) if isinstance(raw, int) else 0
        from_eval = str(e.get("source", "")).startswith("eval")
        if e.get("predicted") is not None and f["id"] == "pred.low_diversity" and from_eval:
            listed = {int(x) for x in e["predicted"]}
            if not listed <= predicted or len(listed | stray) + (n_stray - len(stray)) != len(predicted):
                out.append(f"{where} lists predicted {e['predicted']} (stray {raw}); "
                           f"the matrix predicts {sorted(predicted)}")
        if e.get("pred_classes") is not None and from_eval:
            # pred.collapse counts the stray classes in pred_classes, pred.low_diversity does not
            if len(predicted) not in (int(e["pred_classes"]), int(e["pred_classes"]) + n_stray):
                out.append(f"{where} counts {e['pred_classes']} predicted classes (stray {raw}); "
                           f"the matrix {len(predicted)}")
    last = cols[max(cols)] if cols else None
    for item in rep.get("checklist", []):
        text = str(item.get("evidence", ""))
        m = re.search(r"(\d+) classes predicted at evaluation (\d+)", text)
        if m and int(m.group(2)) in cols:
            n = int(np.count_nonzero(cols[int(m.group(2))]))
            st = re.search(r"(\d+)\s+(?:more\s+)?(?:class(?:es)?\s+)?(?:with\s+)?stray|stray\D{0,20}(\d+)", text)
            said = int(m.group(1)) + (int(st.group(1) or st.group(2)) if st else 0)
            if n != said:
                out.append(f"checklist '{text}': the matrix of evaluation {m.group(2)} predicts {n} classes")
        m = re.search(r"only class (\d+)", text)
        if m and last is not None:
            c = int(m.group(1))
            if last[c] == 0 or int(last.argmax()) != c:
                out.append(f"checklist '{text}': the last evaluation predicts {int(np.count_nonzero(last))} "
                           f"classes, class {c} with {int(last[c])} px, class {int(last.argmax())} largest")
    return out


def test_contradictions_catches_a_report_that_denies_its_matrix():
    events = [{"type": "eval", "index": 0, "step": 50, "matrix": [[5, 0, 3], [0, 4, 0], [1, 0, 2]]}]
    rep = {"findings": [{"id": "pred.collapse", "severity": "error", "first_step": 50,
                        "evidence": {"source": "script mIoU = p_c / C (predictions not observed)", "class": 1}}],
           "checklist": [{"id": "predictions_diverse", "evidence": "only class 1 (floor) predicted"},
                         {"id": "x", "evidence": "2 classes predicted at evaluation 0"}]}
    found = contradictions(rep, events)
    assert len(found) == 3, found
    rep_ok = {"findings": [{"id": "pred.collapse", "severity": "error", "first_step": 50,
                           "evidence": {"source": "evaluation confusion matrix", "class": 0, "eval_index": 0,
                                        "share": 0.4}}],
              "checklist": [{"id": "predictions_diverse", "evidence": "3 classes predicted at evaluation 0"}]}
    assert contradictions(rep_ok, events) == []


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_reports_agree_with_their_confusion_matrices(zoo):
    problems = []
    for name in sorted(TABLE):
        res = zoo.get(name)
        if res["report"] is None:
            problems.append(f"{name}: no report (rc {res['rc']})")
            continue
        problems += [f"{name}: {p}" for p in contradictions(res["report"], res["events"])]
    assert not problems, "\n".join(problems)


# -- the coverage floor over whole trainings ---------------------------------------------------

DENSE_START = 20  # steps at the start that every probe samples
FLOOR = 32        # sampling.max_interval default: every probe at least every 32 steps
READBACK_FLOOR = 10


def coverage_gaps(events: list[dict]) -> dict[str, int]:
    """Largest gap in steps between two training samples of each probe after the dense
    start, counting the gap to the run's last step; the loss read-back from `step` events."""
    seen: dict[str, list[int]] = {"batch": [], "preds": [], "grads": [], "loss": []}
    last = 0
    for ev in events:
        t, s = ev.get("type"), ev.get("step")
        if not isinstance(s, int):
            continue
        last = max(last, s) if t in ("step", "bye") else last
        if t in ("batch", "preds") and ev.get("phase") == "train" and ev.get("rank", 0) == 0:
            seen[t].append(s)
        elif t == "step" and ev.get("rank", 0) == 0:
            seen["loss"].append(s)
            if ev.get("grad_norm") is not None:
                seen["grads"].append(s)
    out = {}
    for name, steps in seen.items():
        base = max((x for x in steps if x <= DENSE_START), default=DENSE_START)
        steps = [base] + sorted(set(x for x in steps if x > DENSE_START)) + [last]
        out[name] = max(b - a for a, b in zip(steps, steps[1:]))
    return out


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_every_probe_samples_at_the_floor_over_the_whole_run(zoo):
    """Issue 14: at default settings, after the dense start, no probe's gap exceeds 32 steps
    (the loss read-back 10), up to the last step, on every >= 600-step training of the zoo."""
    problems = []
    for name in sorted(TABLE):
        res = zoo.get(name)
        gaps = coverage_gaps(res["events"])
        over = {k: g for k, g in gaps.items() if g > (READBACK_FLOOR if k == "loss" else FLOOR)}
        if over:
            problems.append(f"{name}: {over}")
    assert not problems, "\n".join(problems)


def test_coverage_gaps_measures_the_largest_gap_after_the_dense_start():
    ev = [{"type": "batch", "phase": "train", "step": s} for s in list(range(21)) + [52, 100]]
    ev += [{"type": "step", "step": s, "grad_norm": 1.0} for s in range(1, 121, 8)]
    ev += [{"type": "bye", "step": 120}]
    gaps = coverage_gaps(ev)
    assert gaps["batch"] == 48 and gaps["grads"] == 8 and gaps["loss"] == 8
    assert gaps["preds"] == 120 - DENSE_START  # never sampled after the dense start

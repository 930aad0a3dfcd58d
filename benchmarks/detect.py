#!/usr/bin/env python
"""Detection benchmark: run every training of the fault zoo through segwatch and score it.

Each script of ``tests/faults/EXPECTED.yaml`` is run exactly as a user would run it:

    python -m segwatch run --headless --report R.json --run-dir D --config CFG SCRIPT

and the report's findings are compared with the expected ids.

Columns: script, expected id(s), the ids found (error-level ones marked ``!``), the step
each expected id was first raised (the finding's ``first_step``), steps to detect
(``first_step - FAULT_STEP``, the script's own constant), false alarms (error-level
findings that are neither expected nor listed as tolerated consequences; for healthy
trainings every error-level finding) and wall time.  The last line is exactly

    recall R/N, false alarms F, median steps to detect S

where N counts expected ids over all fault scripts.

Usage: python benchmarks/detect.py [--only SUBSTR ...] [--jobs N] [--json OUT] [--keep DIR]
"""
from __future__ import annotations

import argparse
import ast
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
FAULTS = ROOT / "tests" / "faults"


def fault_step(script: Path) -> int:
    """The module-level ``FAULT_STEP = N`` constant, read without importing the script."""
    tree = ast.parse(script.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "FAULT_STEP" for t in node.targets):
            return int(ast.literal_eval(node.value))
    return 0


def run_one(name: str, spec: dict, workdir: Path, timeout: float) -> dict:
    script = FAULTS / name
    cfg = FAULTS / spec["config"]
    out = workdir / Path(name).stem
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    report_path = out / "r.json"
    cmd = [sys.executable, "-m", "segwatch", "run", "--headless", "--report", str(report_path),
           "--run-dir", str(out / "run"), "--config", str(cfg), str(script)]
    t0 = time.time()
    try:
        proc = subprocess.run(cmd, cwd=str(ROOT), capture_output=True, text=True, timeout=timeout)
        rc, err = proc.returncode, proc.stderr
    except subprocess.TimeoutExpired as e:
        rc, err = "timeout", (e.stderr or b"").decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
    wall = time.time() - t0
    report = None
    if report_path.exists():
        try:
            report = json.loads(report_path.read_text())
        except ValueError:
            report = None
    return {"script": name, "rc": rc, "wall": wall, "report": report, "stderr_tail": err[-2000:],
            "fault_step": fault_step(script), "spec": spec}


def score(res: dict) -> dict:
    spec = res["spec"]
    expected = list(spec.get("expected") or [])
    tolerated = set(spec.get("tolerated") or [])
    healthy = bool(spec.get("healthy"))
    findings = (res["report"] or {}).get("findings") or []
    by_id: dict[str, dict] = {}
    for f in findings:
        by_id.setdefault(f.get("id"), f)
    hits, steps = [], []
    for eid in expected:
        f = by_id.get(eid)
        if f is not None:
            hits.append(eid)
            fs = f.get("first_step")
            steps.append(None if fs is None else fs - res["fault_step"])
    errors = [f.get("id") for f in findings if f.get("severity") == "error"]
    if healthy:
        false_alarms = errors
    else:
        false_alarms = [i for i in errors if i not in expected and i not in tolerated]
    return {"expected": expected, "hits": hits, "steps": steps, "false_alarms": false_alarms,
            "found": [(f.get("id"), f.get("severity"), f.get("first_step")) for f in findings]}


def fmt_found(found) -> str:
    return ", ".join(f"{i}{'!' if s == 'error' else ''}" for i, s, _ in found) or "-"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--only", nargs="*", help="run only scripts whose name contains one of these")
    ap.add_argument("--jobs", type=int, default=1, help="scripts run at the same time (default 1)")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per script (default 120)")
    ap.add_argument("--json", help="write the raw results here")
    ap.add_argument("--keep", help="keep run directories under this folder")
    args = ap.parse_args(argv)

    table = yaml.safe_load((FAULTS / "EXPECTED.yaml").read_text())
    names = [n for n in table if not args.only or any(s in n for s in args.only)]
    workdir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="segwatch_detect_"))
    t0 = time.time()
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(lambda n: run_one(n, table[n], workdir, args.timeout), names))

    rows = []
    n_expected = n_hit = n_false = 0
    all_steps = []
    for res in results:
        sc = score(res)
        res["score"] = sc
        n_expected += len(sc["expected"])
        n_hit += len(sc["hits"])
        n_false += len(sc["false_alarms"])
        all_steps += [s for s in sc["steps"] if s is not None]
        found_steps = {i: st for i, _, st in sc["found"]}
        step_found = ", ".join(str(found_steps.get(e, "-")) for e in sc["expected"]) or "-"
        to_detect = ", ".join("-" if e not in sc["hits"] else str(found_steps[e] - res["fault_step"])
                              if found_steps.get(e) is not None else "?" for e in sc["expected"]) or "-"
        status = "" if res["report"] is not None else f" (no report, rc {res['rc']})"
        rows.append((res["script"], ", ".join(sc["expected"]) or "(healthy)", fmt_found(sc["found"]) + status,
                     step_found, to_detect, ", ".join(sc["false_alarms"]) or "0", f"{res['wall']:.1f}"))

    head = ("script", "expected", "found (! = error)", "step found", "steps to detect", "false alarms", "wall s")
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    widths[2] = min(widths[2], 70)
    line = lambda r: " | ".join(str(c)[:widths[i]].ljust(widths[i]) if i == 2 and len(str(c)) > widths[i]
                                 else str(c).ljust(widths[i]) for i, c in enumerate(r))
    print(line(head))
    print("-+-".join("-" * w for w in widths))
    for r in rows:
        print(line(r))
    for res in results:
        if len(fmt_found(res["score"]["found"])) > widths[2]:
            print(f"  {res['script']}: {fmt_found(res['score']['found'])}")
    median = statistics.median(all_steps) if all_steps else float("nan")
    median_s = f"{median:g}" if all_steps else "n/a"
    print(f"total wall {time.time() - t0:.0f}s, {len(results)} scripts, run dirs under {workdir}")
    print(f"recall {n_hit}/{n_expected}, false alarms {n_false}, median steps to detect {median_s}")
    if args.json:
        Path(args.json).write_text(json.dumps([{k: v for k, v in r.items() if k != "spec"} for r in results],
                                              indent=1, default=str))
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

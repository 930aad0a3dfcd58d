#!/usr/bin/env python
"""Detection benchmark: run every training of both fault zoos through segwatch and score it.

The early zoo (``tests/faults/EXPECTED.yaml``: ~100-step runs, faults from the start) and the
late zoo (``tests/faults_late/EXPECTED.yaml``: >= 600-step runs at default settings whose
fault begins at step >= 300 or burns slowly, healthy traps and healthy twins) are run
exactly as a user would run them:

    python -m segwatch run --headless --report R.json --run-dir D --config CFG SCRIPT [-- ARGS]

and the report's findings are compared with the expected ids.

Columns: script, expected id(s), the ids found (error-level ones marked ``!``), the step
each expected id was first raised (the finding's ``first_step``), steps to detect
(``first_step - FAULT_STEP``, the script's own constant), false alarms (error-level
findings that are neither expected nor listed as tolerated consequences; for healthy
trainings every error-level finding) and wall time.  Late-zoo rows also say whether each
expected id came within the entry's window (32 steps of onset, 64 where only an evaluation
can show the fault); an expected item that is a list is met by any one of its ids.  Then

    late zoo: found R/N, in window W/N, median steps after onset S, errors on healthy runs E (K runs)
    early zoo healthy scripts: errors E (K runs)

and the last line is exactly

    recall R/N, false alarms F, median steps to detect S

where N counts expected ids (items) over all fault scripts run.

Usage: python benchmarks/detect.py [--zoo early|late|all] [--only SUBSTR ...] [--jobs N]
                                   [--json OUT] [--keep DIR]
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
LATE = ROOT / "tests" / "faults_late"


def fault_step(script: Path) -> int:
    """The module-level ``FAULT_STEP = N`` constant, read without importing the script."""
    tree = ast.parse(script.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "FAULT_STEP" for t in node.targets):
            return int(ast.literal_eval(node.value))
    return 0


def entries(zoo: str) -> list[dict]:
    """The zoo tables as one list: zoo, entry name, script path, config path, args, spec."""
    out = []
    if zoo in ("early", "all"):
        for name, spec in yaml.safe_load((FAULTS / "EXPECTED.yaml").read_text()).items():
            out.append({"zoo": "early", "name": name, "script": FAULTS / name, "config": FAULTS / spec["config"],
                        "args": [], "spec": spec})
    if zoo in ("late", "all"):
        for name, spec in yaml.safe_load((LATE / "EXPECTED.yaml").read_text()).items():
            out.append({"zoo": "late", "name": name, "script": LATE / spec.get("script", name),
                        "config": LATE / spec["config"], "args": list(spec.get("args") or []), "spec": spec})
    return out


def run_one(entry: dict, workdir: Path, timeout: float) -> dict:
    name, spec, script, cfg = entry["name"], entry["spec"], entry["script"], entry["config"]
    out = workdir / entry["zoo"] / Path(name).stem
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    report_path = out / "r.json"
    cmd = [sys.executable, "-m", "segwatch", "run", "--headless", "--report", str(report_path),
           "--run-dir", str(out / "run"), "--config", str(cfg), str(script)]
    if entry["args"]:
        cmd += ["--", *entry["args"]]
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
    return {"script": name, "zoo": entry["zoo"], "rc": rc, "wall": wall, "report": report,
            "stderr_tail": err[-2000:], "fault_step": fault_step(script), "spec": spec}


def label(item) -> str:
    """An expected item: one id, or a list of alternatives shown as a|b|c."""
    return item if isinstance(item, str) else "|".join(item)


def score(res: dict) -> dict:
    """Per expected item: the earliest first_step among its ids (None: not found), the steps
    after onset, and whether that is inside the entry's window (late zoo only)."""
    spec = res["spec"]
    expected = [label(i) for i in (spec.get("expected") or [])]
    alternatives = {label(i): ([i] if isinstance(i, str) else list(i)) for i in (spec.get("expected") or [])}
    tolerated = set(spec.get("tolerated") or [])
    healthy = bool(spec.get("healthy"))
    window = spec.get("window")
    findings = (res["report"] or {}).get("findings") or []
    by_id: dict[str, dict] = {}
    for f in findings:
        by_id.setdefault(f.get("id"), f)
    hits, steps, first, in_window = [], [], {}, {}
    for item in expected:
        found = [by_id[i] for i in alternatives[item] if i in by_id]
        if not found:
            continue
        hits.append(item)
        fss = [f.get("first_step") for f in found if f.get("first_step") is not None]
        fs = min(fss) if fss else None
        first[item] = fs
        steps.append(None if fs is None else fs - res["fault_step"])
        if window is not None:
            in_window[item] = fs is not None and fs - res["fault_step"] <= window
    allowed = {i for item in expected for i in alternatives[item]} | tolerated
    errors = [f.get("id") for f in findings if f.get("severity") == "error"]
    if healthy:
        false_alarms = errors
    else:
        false_alarms = [i for i in errors if i not in allowed]
    return {"expected": expected, "hits": hits, "steps": steps, "first": first, "in_window": in_window,
            "false_alarms": false_alarms,
            "found": [(f.get("id"), f.get("severity"), f.get("first_step")) for f in findings]}


def fmt_found(found) -> str:
    return ", ".join(f"{i}{'!' if s == 'error' else ''}" for i, s, _ in found) or "-"


def table(rows: list[tuple], head: tuple, wide: int) -> list[str]:
    """Fixed-width rows; column `wide` (the findings) is cut at 70 characters."""
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    widths[wide] = min(widths[wide], 70)
    line = lambda r: " | ".join(str(c)[:widths[i]].ljust(widths[i]) for i, c in enumerate(r))  # noqa: E731
    return [line(head), "-+-".join("-" * w for w in widths)] + [line(r) for r in rows]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--zoo", choices=("early", "late", "all"), default="all", help="which zoo (default all)")
    ap.add_argument("--only", nargs="*", help="run only entries whose name contains one of these")
    ap.add_argument("--jobs", type=int, default=1, help="scripts run at the same time (default 1)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per script (default 300)")
    ap.add_argument("--json", help="write the raw results here")
    ap.add_argument("--keep", help="keep run directories under this folder")
    args = ap.parse_args(argv)

    todo = [e for e in entries(args.zoo) if not args.only or any(s in e["name"] for s in args.only)]
    workdir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="segwatch_detect_"))
    t0 = time.time()
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(lambda e: run_one(e, workdir, args.timeout), todo))

    n_expected = n_hit = n_false = 0
    all_steps: list[int] = []
    early_rows, late_rows, long_found = [], [], []
    late = {"items": 0, "hits": 0, "in_window": 0, "steps": [], "healthy": 0, "healthy_errors": 0}
    early_healthy = {"runs": 0, "errors": 0}
    for res in results:
        sc = score(res)
        res["score"] = sc
        healthy = bool(res["spec"].get("healthy"))
        n_expected += len(sc["expected"])
        n_hit += len(sc["hits"])
        n_false += len(sc["false_alarms"])
        all_steps += [s for s in sc["steps"] if s is not None]
        step_found = ", ".join(str(sc["first"].get(e, "-")) for e in sc["expected"]) or "-"
        to_detect = ", ".join("-" if e not in sc["hits"] else "?" if sc["first"].get(e) is None
                              else str(sc["first"][e] - res["fault_step"]) for e in sc["expected"]) or "-"
        found = fmt_found(sc["found"]) + ("" if res["report"] is not None else f" (no report, rc {res['rc']})")
        if len(found) > 70:
            long_found.append(f"  {res['script']}: {found}")
        expected = ", ".join(sc["expected"]) or "(healthy)"
        false = ", ".join(sc["false_alarms"]) or "0"
        if res["zoo"] == "late":
            ok = ", ".join("yes" if sc["in_window"].get(e) else "NO" for e in sc["expected"]) or "-"
            late_rows.append((res["script"], expected, found, res["fault_step"] if not healthy else "-",
                              step_found, to_detect, f"{ok} ({res['spec']['window']})" if not healthy else "-",
                              false, f"{res['wall']:.1f}"))
            late["items"] += len(sc["expected"])
            late["hits"] += len(sc["hits"])
            late["in_window"] += sum(1 for v in sc["in_window"].values() if v)
            late["steps"] += [s for s in sc["steps"] if s is not None]
            if healthy:
                late["healthy"] += 1
                late["healthy_errors"] += len(sc["false_alarms"])
        else:
            early_rows.append((res["script"], expected, found, step_found, to_detect, false, f"{res['wall']:.1f}"))
            if healthy:
                early_healthy["runs"] += 1
                early_healthy["errors"] += len(sc["false_alarms"])

    if early_rows:
        print("\n".join(table(early_rows, ("script", "expected", "found (! = error)", "step found",
                                            "steps to detect", "false alarms", "wall s"), 2)))
    if late_rows:
        if early_rows:
            print()
        print("\n".join(table(late_rows, ("late zoo entry", "expected", "found (! = error)", "onset",
                                           "step found", "steps after onset", "in window", "false alarms",
                                           "wall s"), 2)))
    for line in long_found:
        print(line)
    median = lambda xs: f"{statistics.median(xs):g}" if xs else "n/a"  # noqa: E731
    print(f"total wall {time.time() - t0:.0f}s, {len(results)} scripts, run dirs "
          f"{'under ' + str(workdir) if args.keep else 'removed'}")
    if late_rows:
        print(f"late zoo: found {late['hits']}/{late['items']}, in window {late['in_window']}/{late['items']}, "
              f"median steps after onset {median(late['steps'])}, errors on healthy runs "
              f"{late['healthy_errors']} ({late['healthy']} runs)")
    if early_rows:
        print(f"early zoo healthy scripts: errors {early_healthy['errors']} ({early_healthy['runs']} runs)")
    print(f"recall {n_hit}/{n_expected}, false alarms {n_false}, median steps to detect {median(all_steps)}")
    if args.json:
        Path(args.json).write_text(json.dumps([{k: v for k, v in r.items() if k != "spec"} for r in results],
                                              indent=1, default=str))
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

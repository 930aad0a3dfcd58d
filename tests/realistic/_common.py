"""Shared helper of the realistic trainings (tests/realistic/): run a script the way a user
does, through the real CLI and shim, and read back what segwatch wrote.

    python -m segwatch run --headless --report R.json --run-dir D [--config CFG] SCRIPT -- ARGS

The scripts live in their own folders (``dformer_style/``, ``unet_style/``...) in the shape
of the codebases people use; they know nothing about segwatch and take ``--fault`` to switch
their one injected fault on.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
RUN_TIMEOUT = 240  # seconds; a ~15 s training can take several times that on a loaded CI box

# the report-vs-confusion-matrix checker of the late zoo (one definition, reused here)
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))
from test_faults_late import contradictions  # noqa: E402


@dataclass
class Run:
    """One training under segwatch: its report, its event log and its output."""

    rc: int | str
    report: dict | None
    events: list[dict] = field(default_factory=list)
    stdout: str = ""
    stderr: str = ""
    run_dir: Path | None = None

    def ids(self) -> set[str]:
        return {f["id"] for f in (self.report or {}).get("findings", [])}

    def severe(self) -> list[str]:
        """Findings at warning or error level: a healthy run must have none."""
        return [f["id"] for f in (self.report or {}).get("findings", [])
                if f["severity"] in ("warning", "error")]

    def describe(self) -> str:
        if self.report is None:
            return f"no report (rc {self.rc}): {self.stderr[-2000:]}"
        return "; ".join(f"{f['id']}({f['severity']}@{f.get('first_step')})"
                         for f in self.report.get("findings", [])) or "none"

    def contradictions(self) -> list[str]:
        return contradictions(self.report or {}, self.events)


def run_cli(script: Path, workdir: Path, args: list[str] | tuple[str, ...] = (),
            config: Path | None = None, timeout: int = RUN_TIMEOUT) -> Run:
    """Run ``script`` under ``segwatch run --headless`` with its cwd in ``workdir`` (where
    the script may write checkpoints) and return what segwatch recorded."""
    workdir.mkdir(parents=True, exist_ok=True)
    report, run_dir = workdir / "r.json", workdir / "run"
    report.unlink(missing_ok=True)  # a stale report would pass for this run's
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = [sys.executable, "-m", "segwatch", "run", "--headless", "--report", str(report),
           "--run-dir", str(run_dir)]
    if config is not None:
        cmd += ["--config", str(config)]
    cmd += [str(script)]
    if args:
        cmd += ["--", *args]
    try:
        proc = subprocess.run(cmd, cwd=str(workdir), capture_output=True, text=True, timeout=timeout)
        rc, err = proc.returncode, proc.stderr
    except subprocess.TimeoutExpired as e:
        rc, err = "timeout", str(e.stderr or "")
    events = []
    ev_path = run_dir / "events.jsonl"
    if ev_path.exists():
        for line in ev_path.read_text(errors="replace").splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                pass  # a line cut by a killed run
    log = run_dir / "stdout.log"
    return Run(rc=rc, report=json.loads(report.read_text()) if report.exists() else None,
               events=events, stdout=log.read_text(errors="replace") if log.exists() else "",
               stderr=err, run_dir=run_dir)


def assert_class_names_in_markdown(run: Run, classes: list[str], source: str, out_dir: Path) -> None:
    """The framework's class names reach the report: the first ``class_names`` probe holds
    ``classes`` (read by the ``source`` adapter), and ``segwatch report --markdown`` (written
    into ``out_dir``) names each class in its per-class table."""
    names = [e for e in run.events if e.get("type") == "probe" and e.get("name") == "class_names"]
    assert names and names[0]["class_names"] == classes and names[0]["source"] == source, names[:1]
    out = subprocess.run([sys.executable, "-m", "segwatch", "report", "--markdown", "--out", str(out_dir),
                          str(run.run_dir)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    md = (out_dir / "report.md").read_text()
    for c, name in enumerate(classes):
        assert f"| {c} | {name} |" in md, md[-3000:]

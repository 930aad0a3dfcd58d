"""``segwatch ls``: the runs in a directory, one summary each."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .replay import load_report
from .report import worst_finding
from .store import RunDir


@dataclass
class RunSummary:
    """One line of the listing: where the run is and how it stands."""
    path: Path
    status: str
    steps: object              # the report's ``steps`` (None when there is no report)
    last_miou: float | None    # the last evaluation's mIoU (percent), if any
    worst: dict | None         # the worst finding (severity first, then earliest), if any

    @property
    def name(self) -> str:
        return self.path.name


def run_dirs(base: str | os.PathLike) -> list[RunDir]:
    """The run directories directly under ``base`` (those with a meta.json), sorted by name."""
    base = Path(base)
    if not base.is_dir():
        return []
    out = []
    for d in sorted(base.iterdir()):
        if d.is_dir():
            run = RunDir(d)
            if run.has_meta():
                out.append(run)
    return out


def summarize(run: RunDir) -> RunSummary:
    """The run's status (``lost`` when its supervisor is gone), steps, last mIoU and worst
    finding, from its report (stored, or rebuilt from the events)."""
    status = run.status()
    try:
        rep = load_report(run.path)
    except Exception:
        rep = {}
    last = None
    miou = rep.get("miou") or []
    if miou:
        try:
            last = float(miou[-1][1])
        except (TypeError, ValueError, IndexError):
            last = None
    return RunSummary(run.path, status, rep.get("steps"), last, worst_finding(rep.get("findings") or []))


def list_runs(base: str | os.PathLike) -> list[RunSummary]:
    return [summarize(run) for run in run_dirs(base)]

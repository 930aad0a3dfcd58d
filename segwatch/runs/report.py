"""The run report's supervisor parts and its renderings (text, Markdown).

``finalize_report`` fills in what only the supervisor knows (exit code, status, actions,
run directory), the same for a live run and a replay.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from . import corelink

SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}


def report_action(actions: list[dict]) -> dict | None:
    """The report's ``action``: the first kill if any; else the first pause by policy; else
    a pause (by a user) still in force at the end; else null."""
    def brief(a: dict) -> dict:
        return {"kind": a.get("kind"), "finding": a.get("finding"), "step": a.get("step"), "by": a.get("by")}

    kills = [a for a in actions if a.get("kind") == "kill"]
    if kills:
        return brief(kills[0])
    pauses = [a for a in actions if a.get("kind") == "pause" and a.get("by") == "policy"]
    if pauses:
        return brief(pauses[0])
    if actions and actions[-1].get("kind") == "pause":
        return brief(actions[-1])
    return None


def finalize_report(report: dict, *, exit_code: Any, status: str | None, script: str | None,
                    run_dir: str, actions: list[dict]) -> dict:
    """Fill in the supervisor's parts of the report (same for a live run and a replay)."""
    report.setdefault("schema", corelink.REPORT_SCHEMA)
    report["exit_code"] = exit_code
    if not report.get("script") and script:
        report["script"] = script
    report["action"] = report_action(actions)
    report["actions"] = [{k: a.get(k) for k in ("kind", "finding", "step", "by")} for a in actions]
    if status:
        report["status"] = status
    report["run_dir"] = run_dir
    return report


def worst_finding(findings: list[dict]) -> dict | None:
    if not findings:
        return None
    return sorted(findings, key=lambda f: (SEVERITY_ORDER.get(f.get("severity"), 3),
                                           f.get("first_step") if isinstance(f.get("first_step"), int) else 1 << 60))[0]


def _last_miou(rep: dict) -> float | None:
    miou = rep.get("miou") or []
    if not miou:
        return None
    try:
        last = miou[-1]
        return float(last[1] if isinstance(last, (list, tuple)) else last)
    except (TypeError, ValueError, IndexError):
        return None


def _action_text(action: dict | None) -> str:
    if not action:
        return "none"
    why = f" on {action['finding']}" if action.get("finding") else ""
    return f"{action.get('kind')}{why} at step {action.get('step')} (by {action.get('by') or 'policy'})"


def format_text(rep: dict) -> str:
    lines = []
    lines.append(f"segwatch report — {rep.get('run_dir') or ''}")
    lines.append(f"  script:    {rep.get('script')}")
    lines.append(f"  status:    {rep.get('status', '?')}   exit code: {rep.get('exit_code')}")
    miou = _last_miou(rep)
    n_eval = len(rep.get("miou") or [])
    lines.append(f"  steps:     {rep.get('steps')}   mIoU: "
                 + (f"{miou:.2f}% (last of {n_eval})" if miou is not None else "-"))
    lines.append(f"  action:    {_action_text(rep.get('action'))}")
    if rep.get("note"):
        lines.append(f"  note:      {rep['note']}")
    findings = rep.get("findings") or []
    lines.append("")
    lines.append(f"Findings ({len(findings)}):" if findings else "Findings: none")
    for f in sorted(findings, key=lambda f: SEVERITY_ORDER.get(f.get("severity"), 3)):
        title = f.get("title") or ""
        lines.append(f"  {str(f.get('severity', '')).upper():8s}{f.get('id')}  (step {f.get('first_step')}, "
                     f"{f.get('phase', 'train')})  {title}")
        ev = f.get("evidence") or {}
        if ev:
            lines.append("          evidence: " + ", ".join(f"{k}={_short(v)}" for k, v in list(ev.items())[:8]))
        if f.get("advice"):
            lines.append(f"          advice:   {f['advice']}")
    checklist = rep.get("checklist") or []
    if checklist:
        lines.append("")
        lines.append("Checklist:")
        for item in checklist:
            lines.append(f"  [{str(item.get('state', '?')):7s}] {item.get('id')}: {item.get('evidence') or ''}")
    lines.extend(_ranks_text(rep.get("ranks")))
    return "\n".join(lines)


def _ranks_text(ranks: Any) -> list[str]:
    """A distributed run's ranks (docs/DISTRIBUTED.md), one line each."""
    if not isinstance(ranks, dict) or not ranks.get("per_rank"):
        return []
    out = ["", f"Ranks (world size {ranks.get('world_size')}, {ranks.get('reporting_here')} reporting here):"]
    for r in ranks["per_rank"]:
        if not r.get("seen"):
            continue
        loss = r.get("loss")
        gn = r.get("grad_norm")
        out.append(f"  rank {r.get('rank')}: step {r.get('steps')}  loss {_short(loss) if loss is not None else '-'}"
                   f"  grad {_short(gn) if gn is not None else '-'}"
                   f"  non-finite losses {r.get('loss_nonfinite_total', 0)}  end {r.get('bye') or '-'}")
    return out


def _short(v: Any, n: int = 60) -> str:
    s = f"{v:.4g}" if isinstance(v, float) else str(v)
    return s if len(s) <= n else s[: n - 1] + "…"


def format_markdown(rep: dict) -> str:
    out = [f"# segwatch report: `{Path(str(rep.get('script') or '?')).name}`", ""]
    miou = _last_miou(rep)
    out += [
        "| | |", "|---|---|",
        f"| script | `{rep.get('script')}` |",
        f"| status | {rep.get('status', '?')} (exit code {rep.get('exit_code')}) |",
        f"| steps | {rep.get('steps')} |",
        f"| last mIoU | {f'{miou:.2f} %' if miou is not None else '-'} |",
        f"| action | {_action_text(rep.get('action'))} |",
        "",
    ]
    findings = rep.get("findings") or []
    out.append(f"## Findings ({len(findings)})")
    out.append("")
    if not findings:
        out.append("None.")
    for f in sorted(findings, key=lambda f: SEVERITY_ORDER.get(f.get("severity"), 3)):
        out.append(f"### {str(f.get('severity', '')).upper()} `{f.get('id')}` — {f.get('title') or ''}")
        out.append("")
        out.append(f"First seen at step {f.get('first_step')} ({f.get('phase', 'train')}).")
        ev = f.get("evidence") or {}
        if ev:
            out.append("")
            out.append("Evidence: " + ", ".join(f"`{k}={_short(v)}`" for k, v in list(ev.items())[:10]))
        if f.get("advice"):
            out.append("")
            out.append(f"> {f['advice']}")
        out.append("")
    checklist = rep.get("checklist") or []
    if checklist:
        out += ["## Checklist", "", "| item | state | evidence |", "|---|---|---|"]
        for item in checklist:
            ev = str(item.get("evidence") or "").replace("|", "\\|")
            out.append(f"| {item.get('id')} | {item.get('state')} | {ev} |")
        out.append("")
    series = rep.get("miou") or []
    if series:
        out += ["## mIoU", "", "| step | mIoU % |", "|---|---|"]
        for row in series[-20:]:
            try:
                out.append(f"| {row[0]} | {float(row[1]):.2f} |")
            except (TypeError, ValueError, IndexError):
                continue
        out.append("")
    return "\n".join(out)

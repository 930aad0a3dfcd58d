"""The run report (DESIGN.md "Report", schema ``segwatch.report/1``), plus compatible
extensions (extra keys only; no renames)."""
from __future__ import annotations

import math

from .findings import jsonable

SCHEMA = "segwatch.report/1"


def _action(state) -> dict | None:
    """The decisive pause/kill: the last kill if any, else the last pause."""
    chosen = None
    for a in state.actions:
        if a.get("kind") == "kill":
            chosen = a
        elif a.get("kind") == "pause" and (chosen is None or chosen.get("kind") != "kill"):
            chosen = a
    if chosen is None:
        return None
    return {"kind": chosen["kind"], "finding": chosen.get("finding"), "step": chosen.get("step"),
            "by": chosen.get("by")}


def _num(v):
    if v is None:
        return None
    return round(float(v), 6) if math.isfinite(v) else None


def build_report(state, exit_code=None) -> dict:
    lang = state.lang
    code = exit_code if exit_code is not None else state.exit_code
    # segwatch's own evaluations (guide convention); when the shim could not observe any,
    # the values the script printed, so that the curve is never silently empty
    if state.miou:
        miou, source = [[int(s), _num(g)] for s, g, _ in state.miou], "segwatch"
    elif state.script_metrics:
        miou, source = [[int(s), _num(v)] for s, v in state.script_metrics], "script"
    else:
        miou, source = [], None
    rep = {
        "schema": SCHEMA,
        "script": state.script,
        "exit_code": code,
        "steps": int(state.step),
        "action": _action(state),
        "findings": [f.to_dict(lang) for f in state.findings.values()],
        "checklist": [c.to_dict(lang) for c in state.checklist],
        "miou": miou,
        # extensions
        "miou_source": source,
        "miou_mmseg": [[int(s), _num(m)] for s, _, m in state.miou],
        "status": state.status,
        "lang": lang,
        "epoch": state.epoch,
        "num_classes": state.num_classes,
        "ignore_index": state.ignore_index,
        "inferred_ignore": state.inferred_ignore,
        "script_metrics": [[int(s), _num(v)] for s, v in state.script_metrics],
        "evals": len(state.evals),
        "overhead": state.overhead,
        "probes_disabled": list(state.probes_disabled),
        "dropped": int(state.counters.get("dropped", 0)),
        "counters": dict(state.counters),
        "actions": list(state.actions),
    }
    return jsonable(rep)

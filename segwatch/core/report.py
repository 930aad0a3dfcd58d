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
        # the script's own epoch count (the last epoch it printed), or None: it cannot be known;
        # loader_passes also counts passes of next()-driven loops the shim could not
        "epochs": {"script": state.loop.script_epoch, "script_total": state.loop.script_epochs_total,
                   "loader_passes": state.loop.passes},
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
    ranks = _ranks(state)
    if ranks is not None:
        rep["ranks"] = ranks
    return jsonable(rep)


def _ranks(state) -> dict | None:
    """Distributed runs: every rank's progress (the findings and merged evaluations above
    already cover all ranks)."""
    ws = int(getattr(state, "world_size", 1) or 1)
    seen = list(getattr(state, "ranks", []) or [])
    if ws <= 1 and len(seen) <= 1:
        return None
    per = []
    for r in sorted(set(seen) | set(range(ws))):
        loss = state.rank_loss.get(r)
        gn = state.rank_grad_norm.get(r)
        last_loss = loss.last() if loss is not None and len(loss) else None
        last_gn = gn.last() if gn is not None and len(gn) else None
        per.append({
            "rank": r, "seen": r in state.rank_step, "steps": state.rank_step.get(r),
            "loss": _num(last_loss[1]) if isinstance(last_loss, tuple) else _num(last_loss),
            "grad_norm": _num(last_gn[1]) if isinstance(last_gn, tuple) else _num(last_gn),
            "loss_nonfinite_total": state.rank_loss_nonfinite.get(r, 0),
            "bye": (state.rank_bye.get(r) or {}).get("reason"),
            "last_event_t": state.rank_last_t.get(r),
        })
    conf = {str(r): int(m.sum()) for r, m in (getattr(state, "rank_confusion", {}) or {}).items()}
    return {"world_size": ws, "reporting_here": int(state.expected_ranks), "lead_rank": int(state.lead_rank),
            "per_rank": per, "last_eval_pixels_by_rank": conf}

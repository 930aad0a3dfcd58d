"""The Ranks tab: one row per global rank (node, step, last loss, gradient norm, last seen,
non-finite losses, end) and one loss curve per rank.

For a fleet (several nodes merged, ``FleetState``) the node column names each rank's node;
a single node's distributed run shows its own ranks. "Last seen" is how long before the
newest event of any rank this rank's last event came (a rank that stopped reporting stands
out), so a replay shows the same ages as the live run did at its end.
"""
from __future__ import annotations

import math
from typing import Any

from rich.text import Text
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from segwatch.tui.panels.base import Panel, series_arrays, series_last, sget
from segwatch.tui.text import fduration, fint, fnum
from segwatch.tui.widgets import Plot

#: per-rank curves drawn (the table lists every rank)
MAX_CURVES = 8
#: a rank whose last event is this much older than the newest is shown as falling behind
STALE_S = 30.0
_WORDS = {
    "tab": ("Ranks", "各进程"),
    "title": ("{n} ranks (world size {ws})", "{n} 个进程（world size {ws}）"),
    "nodes": (" on {n} nodes", "，{n} 个节点"),
    "none": ("not a distributed run: no ranks to compare", "不是分布式训练：没有可比较的进程"),
    "rank": ("rank", "进程"), "node": ("node", "节点"), "step": ("step", "步"), "loss": ("loss", "loss"),
    "grad": ("grad norm", "梯度范数"), "seen": ("last seen", "最近上报"), "nan": ("non-finite", "非有限"),
    "end": ("end", "结束"),
    "curves": ("Loss by rank", "各进程 loss"),
    "ago": ("-{d}", "-{d}"),
}


def w(key: str, lang: str) -> str:
    en, zh = _WORDS[key]
    return zh if lang == "zh" else en


def tab_label(lang: str = "en") -> str:
    return w("tab", lang)


def rank_rows(state: Any) -> list[dict]:
    """The table's rows, from RunState's per-rank views (and FleetState's nodes)."""
    ranks = sorted(set(sget(state, "ranks", []) or []) | set(range(int(sget(state, "world_size", 1) or 1))))
    last_t = sget(state, "rank_last_t", {}) or {}
    newest = max(last_t.values()) if last_t else None
    node_of = getattr(state, "node_of", None)
    rows = []
    for r in ranks:
        loss = series_last((sget(state, "rank_loss", {}) or {}).get(r))
        gn = series_last((sget(state, "rank_grad_norm", {}) or {}).get(r))
        t = last_t.get(r)
        rows.append({
            "rank": r,
            "node": node_of(r) if callable(node_of) else None,
            "seen": r in (sget(state, "rank_step", {}) or {}),
            "step": (sget(state, "rank_step", {}) or {}).get(r),
            "loss": loss, "grad_norm": gn,
            "behind_s": (newest - t) if (newest is not None and t is not None) else None,
            "nonfinite": (sget(state, "rank_loss_nonfinite", {}) or {}).get(r, 0),
            "end": ((sget(state, "rank_bye", {}) or {}).get(r) or {}).get("reason"),
        })
    return rows


class RanksPanel(Panel):
    def compose(self):
        yield Static(id="ranks-head")
        table = DataTable(id="ranks-table", zebra_stripes=True, cursor_type="row", show_cursor=False)
        yield table
        yield Static(Text(w("curves", self.lang), style="bold underline"), id="ranks-curves-head")
        yield Vertical(id="ranks-curves")

    def on_mount(self) -> None:
        table = self.query_one("#ranks-table", DataTable)
        for key in ("rank", "node", "step", "loss", "grad", "seen", "nan", "end"):
            table.add_column(w(key, self.lang), key=key)
        self._curves: dict[int, Plot] = {}

    def render_state(self, state: Any, view: Any) -> None:
        rows = rank_rows(state)
        ws = int(sget(state, "world_size", 1) or 1)
        head = self.query_one("#ranks-head", Static)
        if ws <= 1 and len(rows) <= 1:
            head.update(Text(w("none", self.lang), style="dim"))
        else:
            nodes = {r["node"] for r in rows if r["node"] is not None}
            title = w("title", self.lang).format(n=sum(r["seen"] for r in rows), ws=ws)
            if nodes:
                title += w("nodes", self.lang).format(n=len(nodes))
            head.update(Text(title, style="bold"))
        table = self.query_one("#ranks-table", DataTable)
        table.clear()
        for r in rows:
            loss = r["loss"]
            bad_loss = isinstance(loss, float) and not math.isfinite(loss)
            behind = r["behind_s"]
            table.add_row(
                str(r["rank"]),
                "–" if r["node"] is None else str(r["node"]),
                fint(r["step"]) if r["seen"] else Text("not seen", style="yellow"),
                Text(fnum(loss, 4), style="bold red" if bad_loss else ""),
                fnum(r["grad_norm"], 3),
                Text("–" if behind is None else ("now" if behind < 1 else "-" + fduration(behind)),
                     style="bold red" if (behind or 0) >= STALE_S and not r["end"] else ""),
                Text(fint(r["nonfinite"]), style="bold red" if r["nonfinite"] else "green"),
                r["end"] or "",
                key=str(r["rank"]),
            )
        self._draw_curves(state, [r["rank"] for r in rows if r["seen"]][:MAX_CURVES], rows)

    def _draw_curves(self, state: Any, ranks: list[int], rows: list[dict]) -> None:
        box = self.query_one("#ranks-curves", Vertical)
        node = {r["rank"]: r["node"] for r in rows}
        for r in ranks:
            plot = self._curves.get(r)
            label = f"loss[{r}]" + (f"  node {node[r]}" if node.get(r) is not None else "")
            if plot is None:
                plot = Plot(label, color="cyan", id=f"rank-loss-{r}", classes="rank-curve")
                self._curves[r] = plot
                box.mount(plot)
            steps, values = series_arrays((sget(state, "rank_loss", {}) or {}).get(r))
            plot.set_data(steps, values, note=f"last {fnum(values[-1], 4)}" if values else "", title=label)

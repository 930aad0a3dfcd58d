"""FleetState: one RunState for a multi-node run, fed by the merged streams of its nodes.

Every node of a multi-node run has its own supervisor and run directory; each records the
ranks of its node. ``FleetState`` takes the events of all of them, merged in a deterministic
order (``merge.py``; each event tagged with ``node``), and diagnoses the whole world:

- ``expected_ranks`` is the world (not a node's local world), so core's evaluation merge
  waits for every rank of every node: confusion matrices and label histograms are of the
  whole validation set, and the ``dist.*`` rules compare ranks across nodes;
- the lead rank is the world's first rank (0), whose events drive the main series;
- findings naming a rank (``loss.nonfinite``, ``dist.rank_silent``) also name its node
  (evidence ``node``; ``nodes`` for a list of ranks);
- each supervisor's own ``status`` is kept per node; the fleet's status is final only when
  every node's is; supervisor-parsed script metrics are taken from the lead node only.

No torch, no textual (DESIGN.md layers): core's RunState does the work.
"""
from __future__ import annotations

from typing import Any

from segwatch.core.coerce import fint
from segwatch.core.state import RunState

FINAL = ("finished", "killed", "failed", "lost")
#: a worse end wins when the nodes ended differently
_END_ORDER = ("failed", "killed", "lost", "finished")


class FleetState(RunState):
    """``nodes``: one dict per node in fleet order (``name``, ``target``, ``node_rank``)."""

    def __init__(self, config=None, lang: str = "en", history: int = 4096,
                 nodes: list[dict] | None = None) -> None:
        super().__init__(config, lang=lang, history=history)
        self.nodes: list[dict] = [dict(n) for n in (nodes or [])]
        self.node_of_rank: dict[int, int] = {}     # global rank -> node index
        self.node_status: dict[int, str] = {}
        self.node_exit: dict[int, Any] = {}
        self.node_local_ws: dict[int, int] = {}
        self._leads: set[int] = set()

    # ------------------------------------------------------------------ nodes
    def node_id(self, index: int) -> int:
        """What a node is called in findings: its torchrun node rank when known, else its index."""
        if 0 <= index < len(self.nodes):
            nr = self.nodes[index].get("node_rank")
            if isinstance(nr, int) and not isinstance(nr, bool):
                return nr
        return index

    def node_of(self, rank: int) -> int | None:
        i = self.node_of_rank.get(rank)
        return None if i is None else self.node_id(i)

    @property
    def expected_ranks(self) -> int:
        """Every rank of the world (of the nodes in the fleet, when each told its local size)."""
        ws = max(int(self.world_size or 1), 1)
        n = len(self.nodes)
        if n and len(self.node_local_ws) >= n:
            return max(1, min(ws, sum(self.node_local_ws.values())))
        return ws

    # ------------------------------------------------------------------ ingest
    def ingest(self, event: dict) -> list:
        if not isinstance(event, dict):
            return super().ingest(event)
        node = fint(event.get("node")) or 0
        if node >= len(self.nodes):
            self.nodes.extend({"name": f"node{i}"} for i in range(len(self.nodes), node + 1))
        typ = event.get("type")
        rank = fint(event.get("rank"))
        ws = fint(event.get("world_size")) or 1
        if typ == "status":
            event = self._fleet_status(node, event)
            if event is None:
                self.counters["events"] += 1
                return []
        elif typ == "script_metric" and ws <= 1 and node != self.node_of_rank.get(0, 0):
            self.counters["events"] += 1   # a non-lead node's supervisor parsed its own output
            return []
        elif typ == "output" and len(self.nodes) > 1 and isinstance(event.get("line"), str):
            event = dict(event, line=f"[node {self.node_id(node)}] {event['line']}")
        if ws > 1 and rank is not None:
            self.node_of_rank.setdefault(rank, node)
            if typ == "hello":
                lws, lr = fint(event.get("local_world_size")), fint(event.get("local_rank"))
                if lws:
                    self.node_local_ws[node] = lws
                if lr is not None and 0 <= lr <= rank:
                    self._leads.add(rank - lr)
        new = super().ingest(event)
        self._tag_nodes()
        return new

    def _on_rank_event(self, ev: dict) -> None:
        super()._on_rank_event(ev)
        # core made this node's first rank the lead; the fleet's lead is the world's first
        self.lead_rank = min(self._leads) if self._leads else 0
        self.local_world_size = None

    def _fleet_status(self, node: int, ev: dict) -> dict | None:
        """The node's status is kept; the fleet's (all nodes together) is passed on when it changes."""
        st = ev.get("status")
        if not isinstance(st, str):
            return None
        self.node_status[node] = st
        if "exit_code" in ev:
            self.node_exit[node] = ev.get("exit_code")
        fleet = self.fleet_status()
        if fleet == self.status:
            return None
        out = dict(ev, status=fleet)
        if fleet in FINAL:
            codes = [fint(self.node_exit.get(i)) for i in range(len(self.nodes))]
            bad = [c for c in codes if c]
            out["exit_code"] = bad[0] if bad else (0 if all(c == 0 for c in codes) else None)
        return out

    def fleet_status(self) -> str:
        sts = [self.node_status.get(i) for i in range(max(len(self.nodes), 1))]
        if all(s in FINAL for s in sts):
            return next(s for s in _END_ORDER if s in sts)
        if "paused" in sts:
            return "paused"
        if any(s in ("running",) for s in sts) or any(s in FINAL for s in sts):
            return "running"
        return "starting"

    def _tag_nodes(self) -> None:
        for f in self.findings.values():
            ev = f.evidence
            if not isinstance(ev, dict) or "node" in ev or "nodes" in ev:
                continue
            r, rs = ev.get("rank"), ev.get("ranks")
            extra = {}
            if isinstance(r, int) and self.node_of(r) is not None:
                extra["node"] = self.node_of(r)
            if isinstance(rs, list) and rs:
                extra["nodes"] = sorted({self.node_of(x) for x in rs if isinstance(x, int)} - {None})
            if not extra:
                continue
            # each next to the key it belongs to (short evidence listings show the first keys)
            items = []
            for k, v in ev.items():
                items.append((k, v))
                if k == "rank" and "node" in extra:
                    items.append(("node", extra.pop("node")))
                elif k == "ranks" and "nodes" in extra:
                    items.append(("nodes", extra.pop("nodes")))
            ev.clear()
            ev.update(items)

    # ------------------------------------------------------------------ views
    def report(self, exit_code: int | None = None) -> dict:
        rep = super().report(exit_code)
        ranks = rep.get("ranks")
        if isinstance(ranks, dict):
            for r in ranks.get("per_rank") or ():
                r["node"] = self.node_of(r.get("rank"))
        rep["fleet"] = {"nodes": [
            {"node": self.node_id(i), "name": n.get("name"), "target": n.get("target"),
             "status": self.node_status.get(i), "exit_code": self.node_exit.get(i),
             "ranks": sorted(r for r, k in self.node_of_rank.items() if k == i)}
            for i, n in enumerate(self.nodes)]}
        return rep

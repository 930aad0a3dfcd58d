"""Where a fleet's events come from: live (``FleetClient``) or recorded (``ReplayedFleet``).

Both merge the nodes' streams with ``merge.py`` (each event tagged with its ``node``) into a
``FleetState``; for the same run directories they give the same state: a replay merges the
complete sequences, and the live merger waits until every unfinished node has an event
buffered before it decides the next one (unless a node stays quiet for ``merge.HOLD_S``:
then the view goes on without it and ``released_early`` counts the events merged so).
"""
from __future__ import annotations

import time
from typing import Any, Iterator, Sequence

from segwatch.protocol import LineDecoder

from .merge import HOLD_S, StreamMerger, merge_node_events
from .state import FleetState
from .targets import is_remote


def _node_rank(meta: dict) -> int | None:
    d = meta.get("dist") if isinstance(meta, dict) else None
    nr = d.get("node_rank") if isinstance(d, dict) else None
    return nr if isinstance(nr, int) and not isinstance(nr, bool) else None


def _ordered(nodes: list[dict]) -> list[dict]:
    """Nodes by torchrun node rank when every node's meta says it (the merge order then does
    not depend on the order the targets were given in), else as given."""
    if nodes and all(n.get("node_rank") is not None for n in nodes):
        return sorted(nodes, key=lambda n: n["node_rank"])
    return nodes


def _config(meta: dict):
    from segwatch.runs import corelink

    return corelink.config_from_dict((meta or {}).get("config_resolved"))


class FleetClient:
    """Several live runs seen as one (RunClient's interface: ``poll``, ``events``, ``final``,
    ``meta``, ``error``, ``control``, ``close``). ``control`` goes to every node."""

    def __init__(self, nodes: Sequence[dict], token: str | None = None, hold_s: float | None = HOLD_S) -> None:
        from segwatch.supervisor.client import RunClient

        self.clients: list[Any] = []
        try:
            for n in nodes:
                self.clients.append(RunClient(n["target"], token=token))
        except BaseException:
            self.close()
            raise
        infos = []
        for n, c in zip(nodes, self.clients):
            meta = self._meta_of(c)
            local = getattr(c, "run_dir", None)     # a local run: its absolute path, as replay names it
            infos.append((dict(n, node_rank=_node_rank(meta), target=str(local) if local else n["target"]), c))
        order = _ordered([i[0] for i in infos])
        self.clients = [c for n in order for (m, c) in infos if m is n]
        self.nodes = order
        self.merger = StreamMerger(len(self.clients), hold_s=hold_s)
        self.final = False
        self.target = " ".join(n["target"] for n in self.nodes)

    @staticmethod
    def _meta_of(client: Any) -> dict:
        try:
            return client.meta() or {}
        except Exception:
            return {}

    def meta(self) -> dict:
        """The first node's meta (its resolved config drives the fleet's state)."""
        return self._meta_of(self.clients[0]) if self.clients else {}

    def new_state(self, lang: str = "en") -> FleetState:
        return FleetState(_config(self.meta()), lang=lang, nodes=self.nodes)

    def error(self) -> str | None:
        errs = []
        for n, c in zip(self.nodes, self.clients):
            e = c.error()
            if e:
                errs.append(f"{n['name']}: {e}")
        return "; ".join(errs) or None

    def poll(self, until_now: bool = False) -> list[dict]:
        """The merged events that can be decided now. ``until_now``: a node with nothing more
        to read counts as ended (a one-shot read of what is stored, not a follow)."""
        for i, c in enumerate(self.clients):
            if self.merger.done[i]:
                continue
            batch = c.poll()
            if batch:
                self.merger.push(i, batch)
            elif c.final or until_now:
                self.merger.finish(i)   # its final status is in, and nothing came after it
            else:
                self.merger.nothing_new(i)
        out = self.merger.drain()
        if all(self.merger.done) and not self.merger.pending:
            self.final = True
        return out

    def events(self, follow: bool = True, poll_interval: float = 0.05) -> Iterator[dict]:
        while True:
            batch = self.poll(until_now=not follow)
            yield from batch
            if self.final:
                return
            if not batch:
                time.sleep(poll_interval)

    def control(self, cmd: str, timeout: float = 5.0) -> dict:
        acks = []
        for n, c in zip(self.nodes, self.clients):
            try:
                ack = c.control(cmd, timeout=timeout)
            except Exception as exc:
                ack = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            acks.append(dict(ack if isinstance(ack, dict) else {"ok": bool(ack)}, node=n["name"]))
        bad = [a for a in acks if not a.get("ok")]
        return {"type": "ack", "cmd": cmd, "ok": not bad, "nodes": acks,
                "error": "; ".join(f"{a['node']}: {a.get('error') or 'no answer'}" for a in bad) or None}

    def close(self) -> None:
        for c in self.clients:
            try:
                c.close()
            except Exception:
                pass

    def __enter__(self) -> "FleetClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class ReplayedFleet:
    """Several recorded run directories merged: ``state`` (a FleetState), ``nodes``, ``meta``
    (the first node's), ``events`` (count), ``invalid``, ``status``, ``event_list`` (with
    ``keep_events``; the app feeds them to its own state when ``ingest=False``)."""

    def __init__(self, nodes: Sequence[dict], lang: str | None = None, keep_events: bool = False,
                 ingest: bool = True) -> None:
        from segwatch.runs import RunDir

        runs = []
        for n in nodes:
            if is_remote(n["target"]):
                raise ValueError(f"{n['target']}: replay reads run directories (attach follows addresses)")
            runs.append(RunDir(n["target"]))
        infos = []
        for n, r in zip(nodes, runs):
            meta = r.read_meta()
            infos.append((dict(n, node_rank=_node_rank(meta), target=str(r.path)), r, meta))
        order = _ordered([i[0] for i in infos])
        infos = [next(i for i in infos if i[0] is n) for n in order]
        self.nodes = order
        self.metas = [i[2] for i in infos]
        self.meta = self.metas[0] if self.metas else {}
        self.lang = lang or self.meta.get("lang") or "en"
        self.state = FleetState(_config(self.meta), lang=self.lang, nodes=self.nodes)
        self.actions: list[dict] = []
        self.event_list: list[dict] | None = [] if keep_events else None
        counters = [LineDecoder() for _ in infos]
        n = 0
        for ev in merge_node_events([r.events(c) for (_, r, _), c in zip(infos, counters)]):
            n += 1
            if self.event_list is not None:
                self.event_list.append(ev)
            if ev.get("type") == "action":
                self.actions.append(ev)
            if ingest:
                self.state.ingest(ev)
        self.events = n
        self.invalid = sum(c.invalid for c in counters)
        self.status = self.state.status

    @property
    def run_dir(self) -> str:
        return " ".join(n["target"] for n in self.nodes)

    def report(self) -> dict:
        return fleet_report(self.state, self.actions, self.run_dir)


def fleet_report(state: FleetState, actions: list[dict], run_dir: str) -> dict:
    """The merged report (schema segwatch.report/1 plus ``fleet``), the same live and replayed."""
    from segwatch.runs import FINAL_STATUSES, finalize_report

    rep = state.report(state.exit_code)
    finalize_report(rep, exit_code=state.exit_code, status=state.status, script=state.script,
                    run_dir=run_dir, actions=actions)
    if state.status not in FINAL_STATUSES:
        rep["note"] = "the run has not ended on every node: this report is partial"
    return rep

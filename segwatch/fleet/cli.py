"""``segwatch attach|replay|report`` on several nodes' runs (called by segwatch.cli when more
than one target, a glob, or ``--fleet FILE`` is given)."""
from __future__ import annotations

import json
import sys
from typing import Any

from .targets import FleetError, fleet_nodes

EXIT_USAGE = 2


def _err(msg: str) -> None:
    print(f"segwatch: error: {msg}", file=sys.stderr)


def _nodes(ns: Any, targets: list[str]) -> list[dict] | None:
    try:
        return fleet_nodes(targets, getattr(ns, "fleet", None))
    except FleetError as exc:
        _err(str(exc))
        return None


def _headless(ns: Any) -> bool:
    from segwatch.cli import _headless as headless

    return headless(ns.headless, "printing instead")


def _app(source: Any, state: Any, lang: str, live: bool, title: str) -> Any:
    import segwatch.tui.app as app

    return app.run_app(source, lang=lang, live=live, title=title, state=state)


def _title(nodes: list[dict]) -> str:
    return "fleet: " + ", ".join(n["name"] for n in nodes)


def attach(ns: Any, targets: list[str]) -> int:
    """Follow every node's run; headless prints status lines and findings, ``--report``
    writes the merged report when every node's stream has ended."""
    from segwatch.cli import _follow_headless
    from segwatch.supervisor import ControlError

    from .sources import FleetClient, fleet_report

    nodes = _nodes(ns, targets)
    if nodes is None:
        return EXIT_USAGE
    try:
        client = FleetClient(nodes, token=ns.token)
    except (FileNotFoundError, ValueError) as exc:
        _err(str(exc))
        return EXIT_USAGE
    except (OSError, ControlError) as exc:
        _err(f"cannot attach to the fleet: {exc}")
        return 1
    try:
        state = client.new_state(ns.lang)
        print(f"[segwatch] fleet of {len(client.nodes)} nodes: "
              + ", ".join(f"{n['name']} ({n['target']})" for n in client.nodes), file=sys.stderr)
        actions: list[dict] = []
        if _headless(ns):
            code = _follow_headless(_Recorder(client, actions), ns.lang, ns.interval, state=state)
        else:
            _app(_Recorder(client, actions), state, ns.lang, True, _title(client.nodes))
            code = 0
        if client.merger.released_early:
            print(f"[segwatch] {client.merger.released_early} events were merged without waiting for a quiet "
                  f"node: their order (and the state) may differ from a replay", file=sys.stderr)
        if getattr(ns, "report", None) and client.final:
            with open(ns.report, "w") as fh:
                json.dump(fleet_report(state, actions, client.target), fh, indent=2, ensure_ascii=False)
        why = client.error()
        if why:
            _err(f"cannot follow the fleet: {why}")
            return 1
        return code
    finally:
        client.close()


class _Recorder:
    """The fleet client, keeping the ``action`` events it passes on (for the report)."""

    def __init__(self, client: Any, actions: list) -> None:
        self._client = client
        self._actions = actions

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def poll(self, *a: Any, **kw: Any) -> list[dict]:
        out = self._client.poll(*a, **kw)
        self._actions.extend(e for e in out if e.get("type") == "action")
        return out

    def events(self, follow: bool = True, poll_interval: float = 0.05):
        for ev in self._client.events(follow, poll_interval):
            if ev.get("type") == "action":
                self._actions.append(ev)
            yield ev


def _replayed(ns: Any, targets: list[str], keep_events: bool = False, ingest: bool = True):
    from .sources import ReplayedFleet

    nodes = _nodes(ns, targets)
    if nodes is None:
        return None
    try:
        return ReplayedFleet(nodes, getattr(ns, "lang", None), keep_events=keep_events, ingest=ingest)
    except (FileNotFoundError, ValueError) as exc:
        _err(str(exc))
        return None


def replay(ns: Any, targets: list[str]) -> int:
    from segwatch.cli import print_replayed

    app = not ns.json and not _headless(ns)
    # the app feeds the merged events to a FleetState of its own: read them only (not twice)
    rep = _replayed(ns, targets, keep_events=app, ingest=not app)
    if rep is None:
        return EXIT_USAGE
    if ns.json:
        print(json.dumps(rep.report(), indent=2, ensure_ascii=False))
        return 0
    if app:
        from .sources import FleetState, _config

        state = FleetState(_config(rep.meta), lang=rep.lang, nodes=rep.nodes)
        _app(rep.event_list, state, rep.lang, False, "replay " + _title(rep.nodes))
        return 0
    print_replayed(rep)
    return 0


def report(ns: Any, targets: list[str]) -> int:
    from segwatch.cli import print_report

    if ns.markdown or ns.bundle:
        _err("--markdown and --bundle take one run directory (a fleet's report: --json or text)")
        return EXIT_USAGE
    rep = _replayed(ns, targets)
    if rep is None:
        return EXIT_USAGE
    out = rep.report()
    lang = ns.lang or out.get("lang") or "en"
    print_report(out, ns.json, ns.lang, tail=fleet_text(out, lang))
    return 0


#: the node table's header and row, per language
_FLEET_LINES = {
    "en": ("Fleet ({n} nodes):", "  node {node} {name}: {status} (exit {exit_code}), ranks {ranks}  {target}"),
    "zh": ("集群（{n} 个节点）：", "  节点 {node} {name}：{status}（退出码 {exit_code}），rank {ranks}  {target}"),
}


def fleet_text(rep: dict, lang: str = "en") -> str:
    """The fleet's node table after a report's text, in the report's language."""
    from segwatch.supervisor.headless import status_word

    head, row = _FLEET_LINES.get(lang, _FLEET_LINES["en"])
    nodes = (rep.get("fleet") or {}).get("nodes") or []
    lines = [head.format(n=len(nodes))]
    for n in nodes:
        status = status_word(n.get("status"), "zh") if lang == "zh" else n.get("status")
        lines.append(row.format(node=n.get("node"), name=n.get("name"), status=status, exit_code=n.get("exit_code"),
                                ranks=n.get("ranks"), target=n.get("target")))
    return "\n".join(lines)

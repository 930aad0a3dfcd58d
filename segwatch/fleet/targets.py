"""The targets of a fleet: run directories (a glob too), ``ssh://``/``tcp://`` addresses, or a
fleet file.

A fleet file is YAML (``yaml.safe_load``), either a list of targets or ``{nodes: [...]}``;
each entry is a target string or ``{target: ..., name: ...}``. Relative directories are
relative to the fleet file. Example::

    nodes:
      - ssh://node0/runs/exp1-node0
      - {target: ssh://node1/runs/exp1-node1, name: node1}
"""
from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Sequence
from urllib.parse import urlparse

REMOTE = ("ssh://", "tcp://")


class FleetError(ValueError):
    """A fleet that cannot be built (bad fleet file, a glob matching nothing)."""


def is_remote(target: str) -> bool:
    return target.startswith(REMOTE)


def node_name(target: str) -> str:
    """A short name: the host of an ssh:// target, else the run directory's name."""
    if target.startswith("ssh://"):
        host = urlparse(target).hostname
        if host:
            return host
    if target.startswith("tcp://"):
        return target[len("tcp://"):].split("?", 1)[0]
    return Path(target).name or target


def expand(targets: Sequence[str]) -> list[str]:
    """Globs (quoted, so the shell did not expand them) become the directories they match,
    in sorted order; addresses and plain paths are kept. Duplicates are dropped."""
    out: list[str] = []
    for t in targets:
        if not is_remote(t) and any(c in t for c in "*?["):
            found = sorted(p for p in glob.glob(os.path.expanduser(t)) if os.path.isdir(p))
            if not found:
                raise FleetError(f"{t}: no run directory matches")
            out.extend(found)
        else:
            out.append(t)
    seen: set[str] = set()
    return [t for t in out if not (t in seen or seen.add(t))]


def read_fleet_file(path: str | os.PathLike) -> list[dict]:
    """The fleet file's nodes: ``[{"target": ..., "name": ...}]`` (globs expanded)."""
    import yaml

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except OSError as exc:
        raise FleetError(f"{p}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise FleetError(f"{p}: not YAML: {exc}") from None
    if isinstance(data, dict):
        data = data.get("nodes", data.get("targets"))
    if not isinstance(data, list) or not data:
        raise FleetError(f"{p}: expected a list of targets (or 'nodes:' with one)")
    nodes: list[dict] = []
    for i, item in enumerate(data):
        if isinstance(item, str):
            item = {"target": item}
        if not isinstance(item, dict) or not isinstance(item.get("target"), str) or not item["target"]:
            raise FleetError(f"{p}: nodes[{i}] must be a target or {{target: ..., name: ...}}")
        target = item["target"]
        if not is_remote(target) and not os.path.isabs(os.path.expanduser(target)):
            target = str(p.parent / target)
        for t in expand([target]):
            name = item.get("name") if isinstance(item.get("name"), str) and t == target else None
            nodes.append({"target": t, "name": name or node_name(t)})
    return nodes


def fleet_nodes(targets: Sequence[str], fleet_file: str | None = None) -> list[dict]:
    """The nodes of a fleet in their order: the fleet file's, then the targets given."""
    nodes = read_fleet_file(fleet_file) if fleet_file else []
    nodes += [{"target": t, "name": node_name(t)} for t in expand(targets)]
    if not nodes:
        raise FleetError("no target given")
    return nodes

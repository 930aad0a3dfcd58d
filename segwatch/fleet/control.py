"""``segwatch ctl`` on a fleet: one command sent to every node's supervisor at once.

A pause asked on any node already pauses the whole job (the ranks agree over their process
group: segwatch/shim/pause.py) and holds it until no node asks, so ``pause`` on the fleet is
for the record (every node's supervisor shows "paused") and ``resume`` must reach every node
that was paused. ``kill`` stops every node's tree; a node whose run has already ended counts
as stopped.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Sequence


@dataclass
class NodeAck:
    name: str
    target: str
    ok: bool
    status: str | None = None
    error: str | None = None
    ended: bool = False        # the run had already ended (kill: nothing left to stop)

    def to_dict(self) -> dict:
        return {"node": self.name, "target": self.target, "ok": self.ok, "status": self.status,
                "error": self.error, "ended": self.ended}


def _client(target: str, token: str | None) -> Any:
    from segwatch.supervisor import RunClient

    return RunClient(target, token=token)


def _one(node: dict, command: str, token: str | None, make_client: Callable[[str, str | None], Any]) -> NodeAck:
    from segwatch.supervisor import ControlError

    name, target = node.get("name") or node["target"], node["target"]
    client = None
    try:
        client = make_client(target, token)
        ack = client.control(command)
    except ControlError as exc:
        msg = str(exc)
        ended = "has ended" in msg
        return NodeAck(name, target, ok=ended and command == "kill", error=msg, ended=ended)
    except (OSError, ValueError) as exc:
        return NodeAck(name, target, ok=False, error=str(exc) or type(exc).__name__)
    finally:
        if client is not None:
            try:
                client.close()
            except Exception:
                pass
    return NodeAck(name, target, ok=bool(ack.get("ok")), status=ack.get("status"),
                   error=None if ack.get("ok") else str(ack.get("error")))


def control_fleet(nodes: Sequence[dict], command: str, token: str | None = None,
                  make_client: Callable[[str, str | None], Any] | None = None) -> list[NodeAck]:
    """Send ``command`` to every node (``{"target", "name"}``, as ``fleet.targets.fleet_nodes``
    gives them) in parallel; the answers in the nodes' order."""
    make = make_client or _client
    if not nodes:
        return []
    with ThreadPoolExecutor(max_workers=min(16, len(nodes))) as pool:
        return list(pool.map(lambda n: _one(n, command, token, make), nodes))


def fleet_lines(command: str, acks: Sequence[NodeAck]) -> list[str]:
    out = []
    for a in acks:
        if a.ended:
            out.append(f"{a.name}: {command}: the run has already ended")
        elif a.ok:
            out.append(f"{a.name}: {command}: ok" + (f" (status {a.status})" if a.status else ""))
        else:
            out.append(f"{a.name}: {command}: failed: {a.error}")
    return out

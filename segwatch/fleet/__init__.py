"""One view of a multi-node run: several nodes' event streams merged into one state.

- ``merge``: deterministic merge of per-node event sequences (``merge_node_events``) and its
  incremental form for live streams (``StreamMerger``);
- ``state``: ``FleetState``, a RunState over the whole world (global ranks, evaluations
  merged across nodes, ``dist.*`` rules across nodes, findings naming node and rank);
- ``targets``: the targets of a fleet (run directories, globs, ``ssh://``, a fleet file);
- ``sources``: ``FleetClient`` (live, RunClient-like) and ``ReplayedFleet`` (recorded).

No torch, no textual.
"""
from .merge import StreamMerger, merge_node_events
from .state import FleetState

__all__ = ["FleetState", "StreamMerger", "merge_node_events"]

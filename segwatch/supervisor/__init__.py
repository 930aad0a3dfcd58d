"""The supervisor layer: child process, socket server, run store, policy, viewers' client.

Imports core, protocol, config, psutil and the standard library; never textual or torch.
"""
from .client import ControlError, RunClient, relay, send_control
from segwatch.runs import FINAL_STATUSES, RunStore, effective_status, socket_path_for
from .supervisor import COLLAPSE_FINDINGS, NONFINITE_FINDINGS, Supervisor

__all__ = [
    "COLLAPSE_FINDINGS", "NONFINITE_FINDINGS", "FINAL_STATUSES", "ControlError", "RunClient",
    "RunStore", "Supervisor", "effective_status", "relay", "send_control", "socket_path_for",
]

"""The runs layer: everything that reads or writes a run directory's files.

``RunDir(path)`` reads one run (``meta()``, ``events()`` in stored order, ``tail()`` for a
live follow, ``read_report()``, ``read_log()``); ``RunStore`` is its write side (the
supervisor's). ``Replayed`` / ``replay_state`` rebuild a run's state from its events,
``load_report`` gives its report, ``list_runs`` the summaries behind ``segwatch ls``.
Used by the supervisor, reporting, the app and the CLI; imports protocol, core (through
``corelink``) and the standard library, never textual or torch.
"""
from .listing import RunSummary, list_runs, run_dirs
from .replay import Replayed, load_report, replay_state
from .report import finalize_report, format_markdown, format_text, report_action, worst_finding
from .store import (EVENTS, FINAL_STATUSES, META, REPORT, SHIM_EVENTS, RunDir, RunStore, effective_status,
                    pid_alive, socket_path_for)
from .tail import RunTail

__all__ = [
    "EVENTS", "FINAL_STATUSES", "META", "REPORT", "SHIM_EVENTS", "Replayed", "RunDir", "RunStore",
    "RunSummary", "RunTail", "effective_status", "finalize_report", "format_markdown", "format_text",
    "list_runs", "load_report", "pid_alive", "replay_state", "report_action", "run_dirs",
    "socket_path_for", "worst_finding",
]

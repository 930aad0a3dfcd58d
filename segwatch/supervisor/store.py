"""Moved to ``segwatch.runs.store`` (the runs layer); this name stays for old imports."""
from segwatch.runs.store import (EVENTS, FINAL_STATUSES, MAX_SOCKET_PATH, META, READ_CHUNK, REPORT,  # noqa: F401
                                 SHIM_EVENTS, RunDir, RunStore, decode_lines, effective_status, now, pid_alive,
                                 socket_path_for, write_json_private)

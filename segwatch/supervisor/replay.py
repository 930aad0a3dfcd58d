"""Moved to ``segwatch.runs.replay`` / ``segwatch.runs.report``; this name stays for old imports."""
from segwatch.runs.replay import Replayed, load_report, replay_state  # noqa: F401
from segwatch.runs.report import (SEVERITY_ORDER, finalize_report, format_markdown, format_text,  # noqa: F401
                                  report_action, worst_finding)

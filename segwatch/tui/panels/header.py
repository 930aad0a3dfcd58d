"""The status header: script, status, step, epoch, it/s, elapsed, process-tree CPU/RAM,
device memory, the shim's overhead share, loop progress/ETA and the last action."""
from __future__ import annotations

import os
import time
from typing import Any

from rich.text import Text
from textual.widgets import Static

from segwatch.tui.panels.base import age_note, reading, sget, value_style
from segwatch.tui.panels.gpu import header_line
from segwatch.tui.text import fbytes, fduration, fint
from segwatch.tui.view import TERMINAL, ViewInfo
from segwatch.tui.widgets import hbar

_STATUS_STYLE = {
    "starting": "bold black on cyan",
    "running": "bold black on green",
    "paused": "bold black on yellow",
    "finished": "bold black on green",
    "killed": "bold white on red",
    "failed": "bold white on red",
    "lost": "bold white on magenta",
}


def status_label(status: str | None, exit_code: Any) -> tuple[str, str]:
    if not status:
        return "WAITING", "bold black on grey70"
    label = status.upper()
    style = _STATUS_STYLE.get(status, "bold")
    if status in ("finished", "failed") and exit_code is not None:
        label += f" (exit {exit_code})"
        if exit_code not in (0, None):
            style = "bold white on red"
    elif status == "killed" and exit_code is not None:
        label += f" (exit {exit_code})"
    return label, style


def elapsed_seconds(state: Any, view: ViewInfo, live: bool, now: float | None = None) -> float | None:
    """Seconds the run has been going. A finished run (or a replay) uses the event
    timestamps only, so the value is frozen and reproducible."""
    started = sget(state, "started") or view.run_t0 or view.first_t
    if not isinstance(started, (int, float)):
        return None
    status = sget(state, "status") or view.status
    if status in TERMINAL:
        end = sget(state, "ended") or view.status_t or view.last_t
    elif live and not view.stream_ended:
        end = now if now is not None else time.time()
    else:
        end = view.last_t
    if not isinstance(end, (int, float)):
        return None
    return max(0.0, float(end) - float(started))


def _max_steps(state: Any) -> int | None:
    """``train.max_steps`` of the run's config, when the user set it."""
    train = getattr(sget(state, "config"), "train", None)
    value = getattr(train, "max_steps", None)
    return value if isinstance(value, int) and value > 0 else None


class StatusHeader(Static):
    DEFAULT_CSS = """
    StatusHeader { height: auto; max-height: 4; padding: 0 1; background: $panel; }
    """

    def show(self, state: Any, view: ViewInfo, live: bool, title: str | None = None) -> None:
        status = sget(state, "status") or view.status
        exit_code = sget(state, "exit_code", view.exit_code)
        label, style = status_label(status, exit_code)
        script = sget(state, "script") or view.script or title or "?"
        script = os.path.basename(str(script).rstrip("/")) or str(script)
        sps = sget(state, "steps_per_sec")

        line1 = Text()
        line1.append(f" {label} ", style=style)
        line1.append("  ")
        line1.append(str(script), style="bold")
        line1.append("  step ", style="dim")
        line1.append(fint(sget(state, "step", 0)), style="bold")
        max_steps = _max_steps(state)
        if max_steps:
            line1.append(f"/{fint(max_steps)}", style="dim")
        loop = sget(state, "loop")   # core.progress.LoopProgress: the script's printed epoch first
        epoch = getattr(loop, "script_epoch", None)
        if epoch is None:
            epoch = sget(state, "epoch")
            if epoch is None:
                epoch = view.loop_epoch
            if epoch is not None and getattr(loop, "passes", None) is not None:
                epoch = max(epoch, loop.passes)   # next()-driven passes the shim does not count
        if epoch is not None:
            line1.append("  epoch ", style="dim")
            line1.append(fint(epoch))
        line1.append("  ")
        line1.append(f"{sps:.1f}" if isinstance(sps, (int, float)) else "–")
        line1.append(" it/s", style="dim")
        line1.append("  elapsed ", style="dim")
        line1.append(fduration(elapsed_seconds(state, view, live)))

        line2 = Text()
        proc = view.proc or sget(state, "proc")
        if isinstance(proc, dict) and proc:
            cpu = proc.get("cpu")
            line2.append("CPU ", style="dim")
            line2.append(f"{cpu:.0f}%" if isinstance(cpu, (int, float)) else "–")
            line2.append("  RAM ", style="dim")
            line2.append(fbytes(proc.get("rss")))
            if proc.get("procs"):
                line2.append(f" ({proc['procs']} procs)", style="dim")
            if proc.get("gpu_mem") is not None:
                line2.append("  GPU mem ", style="dim")
                line2.append(fbytes(proc.get("gpu_mem")))
        else:
            line2.append("CPU – RAM –", style="dim")
        overhead = sget(state, "overhead")
        share = overhead.get("share") if isinstance(overhead, dict) else None
        line2.append("  overhead ", style="dim")
        if isinstance(share, (int, float)):
            budget = overhead.get("budget")
            over = isinstance(budget, (int, float)) and share > budget
            r = reading(state, "overhead")
            line2.append(f"{share * 100:.1f}%", style=value_style(state, r, "bold red" if over else ""))
            line2.append_text(age_note(state, r))
        else:
            line2.append("–")
        length, index = view.loop_length, view.loop_index
        now = loop.batch(int(sget(state, "step", 0))) if hasattr(loop, "batch") else None
        if now is not None:   # the last sampled batch advanced by the steps since, within its pass
            index, length = now[0] - 1, now[1]
        if length and index is not None:
            done = min(index + 1, length)
            frac = done / length
            line2.append(f"  batch {done}/{length} ", style="dim")
            line2.append(hbar(frac, 10), style="green")
            line2.append(f" {frac * 100:.0f}%")
            if status in ("running", "starting") and isinstance(sps, (int, float)) and sps > 0:
                line2.append("  ETA epoch ", style="dim")
                line2.append(fduration((length - done) / sps))
        if max_steps and status in ("running", "starting") and isinstance(sps, (int, float)) and sps > 0:
            left = max(0, max_steps - int(sget(state, "step", 0)))
            line2.append("  ETA run ", style="dim")
            line2.append(fduration(left / sps))

        text = Text.assemble(line1, "\n", line2)
        gpu_line = header_line(state)   # GPUs, images/s, data wait: only when known
        if gpu_line is not None:
            text.append("\n")
            text.append_text(gpu_line)
        actions = sget(state, "actions", [])
        action = view.last_action or (actions[-1] if actions else None)
        if isinstance(action, dict) and action:
            line3 = Text("\nlast action: ", style="dim")
            kind = str(action.get("kind", "?"))
            line3.append(kind.upper(), style="bold yellow" if kind != "kill" else "bold red")
            by = action.get("by")
            if by:
                line3.append(f" by {by}")
            if action.get("finding"):
                line3.append(f"  ({action['finding']}")
                if action.get("step") is not None:
                    line3.append(f" @ step {fint(action['step'])}")
                line3.append(")")
            text.append_text(line3)
        self.update(text)

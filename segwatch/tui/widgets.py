"""Small widgets drawn with block characters: a multi-row line plot, horizontal bars
and a confusion-matrix heatmap. All of them render for their current size, so they
fit an 80x24 terminal and use the space of a large one."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from rich.style import Style
from rich.text import Text
from textual.geometry import Size
from textual.widget import Widget

from segwatch.tui.text import class_name, fnum

BLOCKS = " ▁▂▃▄▅▆▇█"
HBLOCKS = " ▏▎▍▌▋▊▉█"


def hbar(frac: float, width: int) -> str:
    """A horizontal bar of ``width`` cells filled to ``frac`` (0..1), with 1/8 precision."""
    if width <= 0:
        return ""
    if frac is None or not math.isfinite(frac):
        frac = 0.0
    frac = min(max(frac, 0.0), 1.0)
    eighths = int(round(frac * width * 8))
    full, part = divmod(eighths, 8)
    s = "█" * full + (HBLOCKS[part] if part and full < width else "")
    return s.ljust(width)


def _bin(values: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Reduce ``values`` to at most ``width`` columns: the mean of the finite values of
    each bin, and whether the bin held a non-finite value."""
    n = len(values)
    if n == 0:
        return np.empty(0), np.empty(0, dtype=bool)
    finite = np.isfinite(values)
    if n <= width:
        return np.where(finite, values, np.nan), ~finite
    edges = np.linspace(0, n, width + 1).astype(int)
    out = np.full(width, np.nan)
    bad = np.zeros(width, dtype=bool)
    for i in range(width):
        seg = values[edges[i]:edges[i + 1]]
        fin = seg[np.isfinite(seg)]
        if fin.size:
            out[i] = fin.mean()
        bad[i] = fin.size < seg.size
    return out, bad


def _bin_by_step(values: np.ndarray, steps: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Like ``_bin`` but the columns split the *step* range evenly, so that a dense start
    (every step sampled) followed by sparse samples (every 32 steps) does not take half the
    plot. A column without a sample holds the value of the one before it."""
    first, last = int(steps[0]), int(steps[-1])
    col = ((steps - first) * width // (last - first + 1)).astype(np.int64)
    col = np.clip(col, 0, width - 1)
    finite = np.isfinite(values)
    sums = np.bincount(col[finite], weights=values[finite], minlength=width)
    counts = np.bincount(col[finite], minlength=width)
    seen = np.bincount(col, minlength=width) > 0
    bad = np.bincount(col[~finite], minlength=width) > 0
    out = np.full(width, np.nan)
    has = counts > 0
    out[has] = sums[has] / counts[has]
    prev = np.nan
    for i in range(width):   # hold the last sample across columns that have none
        if seen[i]:
            prev = out[i]
        else:
            out[i] = prev
    return out, bad


def plot_rows(values: Sequence[float], width: int, height: int, log: bool = False,
              color: str = "cyan", steps: Sequence[int] | None = None
              ) -> tuple[list[Text], float | None, float | None]:
    """Rows of a block-character plot of ``values`` (oldest left) and the (lo, hi) range.

    With ``steps`` (one per value, increasing) spanning more steps than columns, the
    x axis is the training step: each column covers the same number of steps.
    Non-finite values are drawn as a red ``!`` on the bottom row; with ``log`` the
    values are plotted as log10 (non-positive values count as non-finite).
    """
    v = np.asarray(values, dtype=np.float64)
    if log:
        with np.errstate(divide="ignore", invalid="ignore"):
            v = np.where(v > 0, np.log10(np.where(v > 0, v, 1.0)), np.nan)
    width = max(1, width)
    st = None if steps is None else np.asarray(steps, dtype=np.int64)
    if st is not None and len(st) == len(v) and len(v) and int(st[-1]) - int(st[0]) + 1 > width:
        cols, bad = _bin_by_step(v, st, width)
    else:
        cols, bad = _bin(v, width)
    fin = cols[np.isfinite(cols)]
    rows = [Text() for _ in range(height)]
    if fin.size == 0:
        lo = hi = None
    else:
        lo, hi = float(fin.min()), float(fin.max())
    levels = height * 8
    for ci in range(len(cols)):
        y = cols[ci]
        if not math.isfinite(y) or lo is None:
            level = 0
        elif hi == lo:
            level = levels // 2
        else:
            level = 1 + int(round((y - lo) / (hi - lo) * (levels - 1)))
        for r in range(height):
            base = (height - 1 - r) * 8
            fill = min(max(level - base, 0), 8)
            if bad[ci] and r == height - 1 and fill == 0:
                rows[r].append("!", style="bold red")
            else:
                rows[r].append(BLOCKS[fill], style="bold red" if bad[ci] else color)
    if log and lo is not None:
        lo, hi = 10 ** lo, 10 ** hi
    return rows, lo, hi


class Plot(Widget):
    """A multi-row plot of one series with its range on the left and steps below."""

    DEFAULT_CSS = """
    Plot { height: 6; }
    """

    def __init__(self, title: str = "", log: bool = False, color: str = "cyan", **kwargs) -> None:
        super().__init__(**kwargs)
        self.plot_title = title
        self.log_scale = log
        self.plot_color = color
        self._steps: np.ndarray = np.empty(0, dtype=np.int64)
        self._values: np.ndarray = np.empty(0)
        self._note = ""

    def set_data(self, steps: Sequence[int], values: Sequence[float], note: str = "", title: str | None = None) -> None:
        self._steps = np.asarray(steps)
        self._values = np.asarray(values, dtype=np.float64)
        self._note = note
        if title is not None:
            self.plot_title = title
        self.refresh()

    def render(self) -> Text:
        width, height = self.size
        width = max(width, 20)
        height = max(height, 3)
        head = Text(self.plot_title, style="bold")
        if self._note:
            head.append("  " + self._note, style="dim")
        if len(self._values) == 0:
            return Text.assemble(head, "\n", Text("  (no data yet)", style="dim"))
        axis_w = 9
        plot_h = height - 2
        rows, lo, hi = plot_rows(self._values, width - axis_w, plot_h, log=self.log_scale, color=self.plot_color,
                                 steps=self._steps if len(self._steps) == len(self._values) else None)
        out = Text()
        out.append_text(head)
        for r, row in enumerate(rows):
            out.append("\n")
            if r == 0:
                label = fnum(hi, 3)
            elif r == plot_h - 1:
                label = fnum(lo, 3)
            else:
                label = ""
            out.append(label[: axis_w - 1].rjust(axis_w - 1) + "│", style="dim")
            out.append_text(row)
        if len(self._steps):
            first, last = int(self._steps[0]), int(self._steps[-1])
            out.append("\n")
            left = f"step {first}"
            right = f"{last}"
            gap = max(1, width - axis_w - len(left) - len(right))
            out.append(" " * axis_w + left + " " * gap + right, style="dim")
        return out


# --- confusion heatmap ------------------------------------------------------------

_RAMP = ["#1b1b2f", "#23305a", "#1f4e8a", "#1e6fa8", "#2a90b8", "#3fb0b0",
         "#6cc59a", "#a5d67d", "#dfe35f", "#fde725"]


def _shade(frac: float) -> str:
    if not math.isfinite(frac) or frac <= 0:
        return "#101018"
    return _RAMP[min(len(_RAMP) - 1, int(frac * (len(_RAMP) - 1) + 0.5))]


def top_classes(matrix: np.ndarray, k: int) -> list[int]:
    """The ``k`` classes with the most GT + predicted pixels, in class-id order."""
    gt = matrix.sum(axis=1)
    pred = matrix.sum(axis=0)
    weight = gt + pred
    order = sorted(range(len(weight)), key=lambda i: (-int(weight[i]), i))
    return sorted(order[:k])


class Heatmap(Widget):
    """The confusion matrix, two cells per class; rows = ground truth, columns =
    prediction, shade = share of the GT row. Shows the top-k classes (by GT + predicted
    pixels) when not all fit the width, and says so."""

    DEFAULT_CSS = """
    Heatmap { height: auto; }
    """
    LABEL_W = 14
    CELL_W = 2

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.matrix: np.ndarray | None = None
        self.names: list[str] | None = None
        self.lang = "en"

    def set_matrix(self, matrix: np.ndarray | None, names: list[str] | None, lang: str = "en") -> None:
        self.matrix = None if matrix is None else np.asarray(matrix, dtype=np.int64)
        self.names = names
        self.lang = lang
        self.refresh(layout=True)

    def fit(self, width: int) -> int:
        if self.matrix is None:
            return 0
        c = self.matrix.shape[0]
        return max(2, min(c, (width - self.LABEL_W - 1) // self.CELL_W))

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        if self.matrix is None:
            return 1
        header = 2 if self.matrix.shape[0] > 10 else 1
        return self.fit(width) + 1 + header

    def render(self) -> Text:
        m = self.matrix
        if m is None:
            return Text("")
        c = m.shape[0]
        k = self.fit(self.size.width or 80)
        shown = top_classes(m, k) if k < c else list(range(c))
        out = Text()
        if k < c:
            note = (f"showing the top {k} of {c} classes by GT + predicted pixels (widen the terminal for all)"
                    if self.lang != "zh" else f"显示GT+预测像素最多的前 {k} / {c} 个类别（加宽终端可显示全部）")
        else:
            note = f"all {c} classes" if self.lang != "zh" else f"全部 {c} 个类别"
        out.append(note, style="italic dim")
        out.append("\n")
        tens = " " * self.LABEL_W
        units = " " * self.LABEL_W
        for j in shown:
            tens += " " + (str(j // 10 % 10) if j >= 10 else " ")
            units += " " + str(j % 10)
        if any(j >= 10 for j in shown):
            out.append(tens.rstrip() + "\n", style="dim")
        out.append(units, style="dim")
        rows = m[np.ix_(shown, shown)]
        full_rows = m.sum(axis=1)
        for a, i in enumerate(shown):
            out.append("\n")
            label = f"{i:>2} {class_name(self.names, i)}"[: self.LABEL_W - 1].ljust(self.LABEL_W)
            out.append(label, style="dim" if full_rows[i] == 0 else "")
            total = float(full_rows[i])
            for b, j in enumerate(shown):
                frac = rows[a, b] / total if total > 0 else 0.0
                style = Style(bgcolor=_shade(frac), color="white")
                glyph = "◆ " if (a == b and rows[a, b] > 0) else "  "
                out.append(glyph[: self.CELL_W], style=style)
        return out

"""Hand-written SVG charts for the Markdown report: line charts and a confusion heatmap.

No plotting library: each function returns an SVG document as a string (UTF-8 text with
an ``<svg>`` root carrying ``width``, ``height`` and ``viewBox``), readable in any browser
and in the Markdown viewers of GitHub / GitLab / VS Code.

- ``line_chart(series, ...)``: one or more ``(label, xs, ys)`` series as polylines, with
  axes, ticks and tick labels; ``log_y=True`` for a log-scaled y axis (gradient norms).
  Non-finite values (NaN / Inf, and values <= 0 on a log axis) break the line and are
  marked with a red cross at the top edge of the plot, counted in the legend.
- ``heatmap(matrix, names, ...)``: a row-normalised confusion matrix (rows = ground truth,
  columns = prediction), a grid of ``<rect>`` cells with class names on both axes.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence
from xml.sax.saxutils import escape

import numpy as np

#: line colours (colour-blind friendly, Okabe-Ito)
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
NONFINITE_COLOR = "#C00000"
#: dash patterns per series, so that coinciding lines stay visible
DASHES = ("", "7 4", "2 3", "10 3 2 3")
FONT = "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\""


def _attr(s: object) -> str:
    return escape(str(s), {'"': "&quot;"})


def _fmt_num(v: float) -> str:
    """Short tick label: 0.001, 12.5, 1e-07, 3.2k."""
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e5 or a < 1e-3:
        m, e = f"{v:.0e}".split("e")
        return f"{m}e{int(e)}"
    if a >= 1e4:
        return f"{v / 1000:g}k"
    return f"{v:.4g}"


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values (1-2-5 steps) covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi < lo:
        lo, hi = hi, lo
    if hi == lo:
        span = abs(lo) or 1.0
        lo, hi = lo - span * 0.5, hi + span * 0.5
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = mag
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            step = m * mag
            break
    start = math.ceil(lo / step - 1e-9) * step
    ticks = []
    v = start
    while v <= hi + step * 1e-9 and len(ticks) < 50:
        ticks.append(round(v, 12))
        v += step
    return ticks


def _range(vals: np.ndarray) -> tuple[float, float]:
    lo, hi = float(vals.min()), float(vals.max())
    if hi == lo:
        pad = abs(lo) * 0.1 or 1.0
        return lo - pad, hi + pad
    pad = (hi - lo) * 0.05
    return lo - pad, hi + pad


def line_chart(series: Sequence[tuple[str, Iterable[float], Iterable[float]]], *, title: str = "",
               xlabel: str = "step", ylabel: str = "", log_y: bool = False, width: int = 640,
               height: int = 300, y_min: float | None = None, y_max: float | None = None,
               nonfinite_label: str = "non-finite", empty_label: str = "no data") -> str:
    """An SVG line chart of one or more ``(label, xs, ys)`` series (see module docstring)."""
    ml, mr, mt, mb = 64, 16, 30, 58
    pw, ph = width - ml - mr, height - mt - mb
    data = []
    for i, (label, xs, ys) in enumerate(series):
        x = np.asarray(list(xs), dtype=float)
        y = np.asarray([np.nan if v is None else v for v in ys], dtype=float)
        n = min(len(x), len(y))
        x, y = x[:n], y[:n]
        ok = np.isfinite(y) & np.isfinite(x)
        if log_y:
            ok &= y > 0
        data.append((label, x, y, ok, PALETTE[i % len(PALETTE)], DASHES[i % len(DASHES)]))

    allx = np.concatenate([d[1][np.isfinite(d[1])] for d in data]) if data else np.zeros(0)
    if len(allx) == 0:
        allx = np.zeros(0)
    ally = np.concatenate([d[2][d[3]] for d in data]) if data else np.zeros(0)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" {FONT} font-size="11">',
        f"<title>{escape(title)}</title>",
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
        f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#888888"/>',
        f'<text x="{width / 2:.1f}" y="18" text-anchor="middle" font-size="13" font-weight="bold">{escape(title)}</text>',
    ]
    if len(allx) == 0:
        out.append(f'<text x="{ml + pw / 2:.1f}" y="{mt + ph / 2:.1f}" text-anchor="middle" fill="#666666">'
                   f"{escape(empty_label)}</text>")
        out.append("</svg>")
        return "\n".join(out) + "\n"

    x0, x1 = float(allx.min()), float(allx.max())
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if len(ally):
        if log_y:
            ly = np.log10(ally)
            y0, y1 = math.floor(float(ly.min())), math.ceil(float(ly.max()))
            if y1 == y0:
                y1 = y0 + 1
        else:
            y0, y1 = _range(ally)
    else:
        y0, y1 = (0.0, 1.0)
    if not log_y:
        if y_min is not None:
            y0 = y_min if len(ally) == 0 else min(y_min, y0)
        if y_max is not None:
            y1 = max(y_max, y1) if len(ally) and float(ally.max()) > y_max else y_max
        if y1 <= y0:
            y1 = y0 + 1.0

    def sx(v: float) -> float:
        return ml + (v - x0) / (x1 - x0) * pw

    def sy(v: float) -> float:
        t = (math.log10(v) if log_y else v)
        return mt + ph - (t - y0) / (y1 - y0) * ph

    # y ticks and grid
    if log_y:
        exps = list(range(int(y0), int(y1) + 1))
        stride = max(1, math.ceil(len(exps) / 8))
        yt = [10.0 ** e for e in exps[::stride]]
    else:
        yt = [v for v in nice_ticks(y0, y1, 5) if y0 <= v <= y1]
    for v in yt:
        py = sy(v)
        out.append(f'<line x1="{ml}" y1="{py:.1f}" x2="{ml + pw}" y2="{py:.1f}" stroke="#e0e0e0"/>')
        out.append(f'<line x1="{ml - 4}" y1="{py:.1f}" x2="{ml}" y2="{py:.1f}" stroke="#444444"/>')
        out.append(f'<text x="{ml - 6}" y="{py + 4:.1f}" text-anchor="end">{escape(_fmt_num(v))}</text>')
    # x ticks
    xt = [v for v in nice_ticks(x0, x1, 6) if x0 <= v <= x1]
    for v in xt:
        px = sx(v)
        out.append(f'<line x1="{px:.1f}" y1="{mt + ph}" x2="{px:.1f}" y2="{mt + ph + 4}" stroke="#444444"/>')
        out.append(f'<text x="{px:.1f}" y="{mt + ph + 16}" text-anchor="middle">{escape(_fmt_num(v))}</text>')
    # axis labels
    out.append(f'<text x="{ml + pw / 2:.1f}" y="{mt + ph + 32}" text-anchor="middle">{escape(xlabel)}</text>')
    if ylabel:
        cy = mt + ph / 2
        out.append(f'<text x="14" y="{cy:.1f}" text-anchor="middle" transform="rotate(-90 14 {cy:.1f})">'
                   f"{escape(ylabel + (' (log)' if log_y else ''))}</text>")

    if len(ally) == 0:
        out.append(f'<text x="{ml + pw / 2:.1f}" y="{mt + ph / 2:.1f}" text-anchor="middle" '
                   f'fill="{NONFINITE_COLOR}">{escape(nonfinite_label)}</text>')
    # the lines: one polyline per run of finite points; a lone point is a dot
    n_bad_total = 0
    legend = []
    for label, x, y, ok, color, dash in data:
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        seg: list[str] = []
        runs: list[list[str]] = []
        for xi, yi, good in zip(x, y, ok):
            if good:
                seg.append(f"{sx(xi):.1f},{sy(yi):.1f}")
            elif seg:
                runs.append(seg)
                seg = []
        if seg:
            runs.append(seg)
        dots = int(ok.sum()) <= 40
        for r in runs:
            if dots and len(r) > 1:
                for pt in r:
                    cx, cy = pt.split(",")
                    out.append(f'<circle cx="{cx}" cy="{cy}" r="2.2" fill="{color}"/>')
            if len(r) == 1:
                cx, cy = r[0].split(",")
                out.append(f'<circle cx="{cx}" cy="{cy}" r="2.5" fill="{color}"/>')
            else:
                out.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.6"{dash_attr} '
                           f'stroke-linejoin="round" points="{" ".join(r)}"/>')
        bad = np.isfinite(x) & ~ok
        n_bad = int(bad.sum())
        n_bad_total += n_bad
        for xi, yi in zip(x[bad], y[bad]):
            px, py = sx(xi), mt + 6
            what = "NaN" if math.isnan(yi) else _fmt_num(yi) if math.isfinite(yi) else ("Inf" if yi > 0 else "-Inf")
            out.append(f'<g class="nonfinite"><title>{escape(label)} = {escape(what)} at step {_fmt_num(xi)}</title>'
                       f'<path d="M{px - 4:.1f},{py - 4:.1f} L{px + 4:.1f},{py + 4:.1f} M{px - 4:.1f},{py + 4:.1f} '
                       f'L{px + 4:.1f},{py - 4:.1f}" stroke="{NONFINITE_COLOR}" stroke-width="2"/></g>')
        legend.append((label, color, dash_attr, n_bad))

    # legend below the x axis label
    lx, ly = ml, height - 8
    for label, color, dash_attr, n_bad in legend:
        text = label + (f" ({n_bad} {nonfinite_label})" if n_bad else "")
        out.append(f'<line x1="{lx}" y1="{ly - 4}" x2="{lx + 18}" y2="{ly - 4}" stroke="{color}" '
                   f'stroke-width="2"{dash_attr}/>')
        out.append(f'<text x="{lx + 22}" y="{ly}">{escape(text)}</text>')
        lx += 30 + 7 * len(text)
    if n_bad_total:
        out.append(f'<path d="M{lx - 4},{ly - 8} L{lx + 4},{ly} M{lx - 4},{ly} L{lx + 4},{ly - 8}" '
                   f'stroke="{NONFINITE_COLOR}" stroke-width="2"/>')
        out.append(f'<text x="{lx + 8}" y="{ly}" fill="{NONFINITE_COLOR}">{escape(nonfinite_label)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _cell_color(share: float) -> str:
    """White (0) to dark blue (1)."""
    s = min(max(share, 0.0), 1.0) ** 0.6
    r = round(255 + (8 - 255) * s)
    g = round(255 + (48 - 255) * s)
    b = round(255 + (107 - 255) * s)
    return f"#{r:02x}{g:02x}{b:02x}"


def top_classes(matrix: np.ndarray, k: int) -> list[int]:
    """The ``k`` classes with the most ground-truth + predicted pixels, in class order."""
    m = np.asarray(matrix, dtype=np.int64)
    C = m.shape[0]
    if C <= k:
        return list(range(C))
    weight = m.sum(axis=1) + m.sum(axis=0)
    order = sorted(range(C), key=lambda c: (-int(weight[c]), c))[:k]
    return sorted(order)


def heatmap(matrix: np.ndarray, names: Sequence[str] | None = None, *, title: str = "",
            classes: Sequence[int] | None = None, xlabel: str = "predicted",
            ylabel: str = "ground truth", other_label: str = "(other)",
            empty_row_label: str = "no GT pixels") -> str:
    """A row-normalised confusion heatmap of ``matrix`` (rows = GT, columns = prediction).

    ``classes``: the subset of classes to draw (rows and columns); rows are normalised over
    the full row, and when a subset is drawn, an extra last column ``other_label`` holds
    the share predicted as a class not drawn.
    """
    m = np.asarray(matrix, dtype=np.int64)
    C = m.shape[0]
    cls = list(range(C)) if classes is None else [int(c) for c in classes]
    subset = len(cls) < C
    row_tot = m.sum(axis=1)
    n = len(cls)
    ncols = n + (1 if subset else 0)

    def name(c: int) -> str:
        if names is not None and 0 <= c < len(names):
            return f"{c} {names[c]}"
        return str(c)

    labels = [name(c) for c in cls]
    lab_w = min(max((len(s) for s in labels + [other_label]), default=4) * 6.2 + 8, 180)
    cell = max(10, min(32, int(560 / max(ncols, 1))))
    ml, mt = int(lab_w) + 26, 30
    top_lab = int(lab_w * 0.87) + 10   # rotated column labels (sin 60°)
    mb = 24
    pw, ph = cell * ncols, cell * n
    width = ml + pw + 80
    height = mt + max(ph, 100) + top_lab + mb
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" {FONT} font-size="{10 if cell < 20 else 11}">',
        f"<title>{escape(title)}</title>",
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="{width / 2:.1f}" y="18" text-anchor="middle" font-size="13" font-weight="bold">{escape(title)}</text>',
    ]
    show_text = cell >= 22
    for i, r in enumerate(cls):
        tot = int(row_tot[r])
        y = mt + i * cell
        cols = [int(m[r, c]) for c in cls]
        if subset:
            cols.append(tot - sum(cols))
        for j, cnt in enumerate(cols):
            x = ml + j * cell
            share = cnt / tot if tot else 0.0
            fill = _cell_color(share) if tot else "#eeeeee"
            cname = labels[j] if j < n else other_label
            tip = (f"GT {labels[i]} -> pred {cname}: {cnt} px ({share * 100:.1f}% of row)" if tot
                   else f"GT {labels[i]}: {empty_row_label}")
            out.append(f'<rect x="{x}" y="{y}" width="{cell}" height="{cell}" fill="{fill}" '
                       f'stroke="#ffffff" stroke-width="0.5"><title>{escape(tip)}</title></rect>')
            if show_text and tot and share >= 0.005:
                col = "#ffffff" if share > 0.45 else "#222222"
                out.append(f'<text x="{x + cell / 2:.1f}" y="{y + cell / 2 + 3.5:.1f}" text-anchor="middle" '
                           f'font-size="9" fill="{col}">{round(share * 100)}</text>')
        out.append(f'<text x="{ml - 6}" y="{y + cell / 2 + 4:.1f}" text-anchor="end">{escape(labels[i])}</text>')
    # diagonal outline
    for i in range(n):
        out.append(f'<rect x="{ml + i * cell}" y="{mt + i * cell}" width="{cell}" height="{cell}" '
                   f'fill="none" stroke="#D55E00" stroke-width="1"/>')
    out.append(f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="none" stroke="#888888"/>')
    # column labels, rotated, below the grid
    for j in range(ncols):
        x = ml + j * cell + cell / 2 + 4
        y = mt + ph + 6
        text = labels[j] if j < n else other_label
        out.append(f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="end" transform="rotate(-60 {x:.1f} {y:.1f})">'
                   f"{escape(text)}</text>")
    out.append(f'<text x="{ml + pw / 2:.1f}" y="{height - 10}" text-anchor="middle">{escape(xlabel)}</text>')
    cy = mt + ph / 2
    out.append(f'<text x="12" y="{cy:.1f}" text-anchor="middle" transform="rotate(-90 12 {cy:.1f})">'
               f"{escape(ylabel)}</text>")
    # colour scale
    sx0 = ml + pw + 20
    steps = 10
    sh = max(ph, 100) / steps
    for k in range(steps):
        share = 1 - (k + 0.5) / steps
        out.append(f'<rect x="{sx0}" y="{mt + k * sh:.1f}" width="14" height="{sh + 0.5:.1f}" fill="{_cell_color(share)}"/>')
    out.append(f'<text x="{sx0 + 18}" y="{mt + 8}">100%</text>')
    out.append(f'<text x="{sx0 + 18}" y="{mt + steps * sh:.1f}">0%</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"

"""Save an SVG screenshot of the app on a recorded run directory (no terminal needed).

    python -m segwatch.tui tests/data/recorded_run docs/screenshot.svg [--size 100x32] [--tab overview] [--lang zh]

This is how docs/screenshot.svg is made (from the recorded fixture, with the title
"segwatch — recorded SUNRGBD collapse").
"""
from __future__ import annotations

import argparse
import sys

from segwatch.runs import RunDir
from segwatch.tui import screenshot
from segwatch.tui.app import TABS


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m segwatch.tui", description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", help="a run directory with events.jsonl")
    ap.add_argument("out", help="the SVG file to write")
    ap.add_argument("--size", default="100x32", help="terminal size WIDTHxHEIGHT (default 100x32)")
    ap.add_argument("--tab", default=None, choices=[pane for pane, _, _ in TABS])
    ap.add_argument("--lang", default="en", choices=["en", "zh"])
    ap.add_argument("--title", default=None)
    ns = ap.parse_args(argv)
    try:
        width, height = (int(x) for x in ns.size.lower().split("x"))
    except ValueError:
        ap.error(f"--size must look like 100x32, not {ns.size!r}")
    try:
        run = RunDir(ns.run_dir)
    except FileNotFoundError as exc:
        print(exc, file=sys.stderr)
        return 2
    if not run.events_path.is_file():
        print(f"{run.events_path}: no such file", file=sys.stderr)
        return 2
    events = list(run.events())
    screenshot(events, ns.out, size=(width, height), lang=ns.lang, tab=ns.tab, title=ns.title)
    print(f"wrote {ns.out} ({len(events)} events, {width}x{height})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

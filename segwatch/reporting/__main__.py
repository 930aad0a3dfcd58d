"""``python -m segwatch.reporting RUN_DIR [--markdown] [--bundle] [--out PATH] [--lang zh]``.

The same as ``segwatch report RUN_DIR --markdown`` / ``--bundle``; prints the path written.
"""
from __future__ import annotations

import argparse
import sys

from . import make_bundle, render_markdown


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m segwatch.reporting",
                                description="Write a run's readable report (report.md + SVG) or its help-request bundle.")
    p.add_argument("run_dir")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--markdown", action="store_true", help="report.md + SVG charts (default)")
    g.add_argument("--bundle", action="store_true", help="the help-request .tar.gz")
    p.add_argument("--out", metavar="PATH", help="output folder (--markdown) or .tar.gz path (--bundle)")
    p.add_argument("--lang", choices=("en", "zh"), default=None, help="default: the run's own")
    ns = p.parse_args(argv)
    try:
        if ns.bundle:
            path = make_bundle(ns.run_dir, ns.out, lang=ns.lang)
        else:
            path = render_markdown(ns.run_dir, ns.out, lang=ns.lang)
    except FileNotFoundError as exc:
        print(f"segwatch: error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

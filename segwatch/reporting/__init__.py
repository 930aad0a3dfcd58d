"""Human-readable run reports and the help-request bundle.

- ``render_markdown(run_dir, out_dir=None, lang="en")``: ``report.md`` + SVG charts
  (``segwatch report RUN_DIR --markdown``).
- ``make_bundle(run_dir, out_path=None)``: the guide's help request as one ``.tar.gz``
  (``segwatch report RUN_DIR --bundle``).

Layer: stdlib + numpy + core + config, and the run directory reader of the supervisor
(``RunStore.events()``); no torch, no textual, no plotting library.
"""
from .bundle import make_bundle
from .markdown import render_markdown

__all__ = ["make_bundle", "render_markdown"]

"""``python -m segwatch.supervisor SPEC_JSON``: the supervisor as a detached daemon.

``segwatch run`` starts this in its own session (when it opens the app) and then attaches
the app to the run directory as a client, so closing the app never stops the training.
SPEC_JSON holds the already validated arguments of ``segwatch run``.
"""
from __future__ import annotations

import json
import sys

from segwatch.runs import corelink
from .dist import DistSpec
from .process import set_child_subreaper
from .supervisor import Supervisor


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m segwatch.supervisor SPEC_JSON (started by `segwatch run`)", file=sys.stderr)
        return 2
    spec = json.loads(argv[0])
    config = corelink.load_config(spec.get("config_path"))
    set_child_subreaper()
    sup = Supervisor(
        spec["script"],
        spec.get("script_args", []),
        run_dir=spec["run_dir"],
        config=config,
        config_path=spec.get("config_path"),
        headless=False,
        echo=False,
        on_collapse=spec.get("on_collapse"),
        on_nonfinite=spec.get("on_nonfinite"),
        report_path=spec.get("report_path"),
        debug=bool(spec.get("debug")),
        lang=spec.get("lang", "en"),
        interval=float(spec.get("interval", 5.0)),
        use_shim=spec.get("use_shim", True),
        listen=spec.get("listen"),
        allow_remote=bool(spec.get("allow_remote")),
        dist=DistSpec.from_dict(spec.get("dist")),
    )
    return sup.run()


if __name__ == "__main__":
    sys.exit(main())

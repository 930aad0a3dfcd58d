"""The ``segwatch`` command line.

    segwatch run SCRIPT [options] [-- SCRIPT ARGS...]   launch and watch a training
    segwatch demo [--fault NAME] [options]              the bundled tiny training
    segwatch attach TARGET                              the app on a live or finished run
    segwatch attach TARGET TARGET... | --fleet FILE     one view of a multi-node run's nodes (docs/DISTRIBUTED.md)
    segwatch replay RUN_DIR [RUN_DIR...]                the app on a recorded run (several: its nodes merged)
    segwatch report RUN_DIR [--json|--markdown|--bundle] the run report (Markdown + charts, help bundle)
    segwatch ls [DIR]                                   runs in ./segwatch_runs
    segwatch init --preset NAME [--out CFG]             a commented config for a common dataset
    segwatch check --config CFG                         validate and print a config
    segwatch ctl RUN_DIR pause|resume|kill|ping         control a live run (also: pause/resume/kill RUN_DIR)
    segwatch ctl TARGET TARGET... | --fleet FILE CMD    the same on every node of a multi-node run
    segwatch relay RUN_DIR                              JSON-lines bridge used by attach over SSH

Exit status of ``run``: the script's (128+N when it died of signal N); 2 for segwatch's own
usage and config errors, always reported before anything is launched. ``demo`` exits 0 when it
showed what it meant to (a finding acted on by the policy: the run paused or stopped) and its
last line gives the training's own exit status; otherwise the training's status, as ``run``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from segwatch import __version__

EXIT_USAGE = 2
DEFAULT_RUNS = "segwatch_runs"
LANGS = ("en", "zh")
POLICIES = ("warn", "pause", "kill")


class UsageError(Exception):
    """A problem with the command line or the config: exit 2, nothing launched."""


def _err(msg: str) -> None:
    print(f"segwatch: error: {msg}", file=sys.stderr)


# ---------------------------------------------------------------------- run options
# segwatch's own options of `run` (and `demo`): name -> takes a value
RUN_OPTIONS: dict[str, bool] = {
    "--config": True, "--headless": False, "--report": True, "--run-dir": True,
    "--on-collapse": True, "--on-nonfinite": True, "--debug": False, "--lang": True,
    "--interval": True, "--no-shim": False, "--listen": True, "--allow-remote": False, "-h": False, "--help": False,
    "--nproc": True, "--nnodes": True, "--node-rank": True, "--master-addr": True, "--master-port": True,
}


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="CFG", help="segwatch config YAML (or a training YAML with a `segwatch:` section)")
    p.add_argument("--headless", action="store_true",
                   help="no app: a status line per interval and every finding on stderr (default when stdout is not a terminal)")
    p.add_argument("--report", metavar="PATH.json", help="also write the run report here (always in RUN_DIR/report.json)")
    p.add_argument("--run-dir", metavar="DIR", help=f"run directory (default ./{DEFAULT_RUNS}/<time>-<script>)")
    p.add_argument("--on-collapse", choices=POLICIES, help="what to do on pred.collapse (overrides policy.on_collapse)")
    p.add_argument("--on-nonfinite", choices=POLICIES, help="what to do on NaN/Inf loss or gradients (overrides policy.on_nonfinite)")
    p.add_argument("--debug", action="store_true", help="every probe on every step (SEGWATCH_DEBUG=1)")
    p.add_argument("--lang", choices=LANGS, default="en", help="language of findings and advice")
    p.add_argument("--interval", type=float, default=5.0, metavar="S", help="seconds between headless status lines (default 5)")
    p.add_argument("--no-shim", action="store_true",
                   help="run the script without instrumentation (output parsing and process control only)")
    p.add_argument("--listen", metavar="[127.0.0.1:]PORT",
                   help="also listen on a loopback TCP port (token in meta.json); for `attach tcp://...`")
    p.add_argument("--allow-remote", action="store_true",
                   help="let --listen use an address other than loopback (anyone who can reach it may read "
                        "the run; control still needs the token)")
    d = p.add_argument_group("distributed (torchrun; see docs/DISTRIBUTED.md)")
    # None = not given: a Slurm job fills them in (segwatch/slurm.py), else 1, 1, 0
    d.add_argument("--nproc", type=int, default=None, metavar="N",
                   help="ranks on this node: launch through torch.distributed.run with the shim in every rank")
    d.add_argument("--nnodes", type=int, default=None, metavar="N", help="number of nodes (each runs its own segwatch)")
    d.add_argument("--node-rank", type=int, default=None, metavar="R", help="this node's rank (0..nnodes-1)")
    d.add_argument("--master-addr", metavar="HOST", help="rendezvous address (node 0); default 127.0.0.1")
    d.add_argument("--master-port", type=int, metavar="PORT", help="rendezvous port (default, single node: torchrun --standalone binds a free one)")


def split_run_argv(argv: Sequence[str]) -> tuple[list[str], str | None, list[str]]:
    """Split ``run``'s arguments into (segwatch options, SCRIPT, script arguments).

    Everything after the first ``--`` belongs to the script. Before it, segwatch's own
    options are recognised wherever they stand (before or after SCRIPT); other words after
    SCRIPT go to the script in order; an unknown option before SCRIPT is a usage error.
    """
    argv = list(argv)
    tail: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, tail = argv[:i], argv[i + 1:]
    ours: list[str] = []
    script: str | None = None
    extra: list[str] = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        name = tok.split("=", 1)[0] if tok.startswith("--") else tok
        if name in RUN_OPTIONS:
            ours.append(tok)
            if RUN_OPTIONS[name] and "=" not in tok:
                if i + 1 >= len(argv):
                    raise UsageError(f"option {name} needs a value")
                ours.append(argv[i + 1])
                i += 1
        elif script is None:
            if tok.startswith("-") and tok != "-":
                raise UsageError(f"unknown option {tok!r} before the script "
                                 "(script options go after the script, or after `--`)")
            script = tok
        else:
            extra.append(tok)
        i += 1
    return ours, script, extra + tail


def _run_parser(prog: str = "segwatch run", demo: bool = False) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog, allow_abbrev=False,
        usage=f"{prog} {'' if demo else 'SCRIPT '}[options] [-- SCRIPT ARGS...]",
        description="Launch a training script under segwatch's shim and watch it live.",
        epilog="Everything after `--` goes to the script unchanged. Exit status: the script's "
               "(128+N if it died of signal N); 2 for segwatch's own usage or config errors.",
    )
    _add_run_options(p)
    return p


def _parse_run(argv: Sequence[str]) -> tuple[argparse.Namespace, str, list[str]]:
    ours, script, script_args = split_run_argv(argv)
    ns = _run_parser().parse_args(ours)
    if script is None:
        raise UsageError("no script given: segwatch run SCRIPT [options] [-- SCRIPT ARGS...]")
    return ns, script, script_args


def _default_run_dir(script: str, base: str | None = None) -> Path:
    base_dir = Path(base or DEFAULT_RUNS)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    stem = Path(script).stem or "run"
    base_dir.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        name = f"{stamp}-{stem}" + (f"-{n}" if n > 1 else "")
        path = base_dir / name
        try:
            path.mkdir(mode=0o700)
            return path
        except FileExistsError:
            continue
    raise UsageError(f"cannot create a run directory under {base_dir}")


def _dist_spec(ns: argparse.Namespace) -> Any:
    """The torchrun launch asked for by --nproc/--nnodes/..., or None (a single process)."""
    if getattr(ns, "nproc", 1) == 1 and getattr(ns, "nnodes", 1) == 1 and not getattr(ns, "master_addr", None) \
            and getattr(ns, "master_port", None) is None and not getattr(ns, "node_rank", 0):
        return None
    from segwatch.supervisor.dist import DistSpec

    return DistSpec(nproc=ns.nproc, nnodes=ns.nnodes, node_rank=ns.node_rank, master_addr=ns.master_addr,
                    master_port=ns.master_port)


def _slurm_defaults(ns: argparse.Namespace) -> None:
    """Inside a multi-node Slurm job, the distributed options not given come from it."""
    from segwatch.slurm import SlurmError, run_defaults

    names = ("nproc", "nnodes", "node_rank", "master_addr", "master_port")
    try:
        derived, note = run_defaults(os.environ, {k: getattr(ns, k, None) for k in names})
    except SlurmError as exc:
        raise UsageError(str(exc)) from None
    for k, v in derived.items():
        setattr(ns, k, v)
    if note:
        print(f"[segwatch] {note}", file=sys.stderr)


def _prepare_run(ns: argparse.Namespace, script: str) -> tuple[Any, Path]:
    """Every check that can fail before launching: script, config, options, run dir."""
    from segwatch.runs import RunDir, corelink

    if not os.path.isfile(script):
        raise UsageError(f"script not found: {script}")
    if ns.interval is not None and not ns.interval > 0:
        raise UsageError("--interval must be a positive number of seconds")
    if ns.config and not os.path.isfile(ns.config):
        raise UsageError(f"config file not found: {ns.config}")
    for name, default in (("nproc", 1), ("nnodes", 1), ("node_rank", 0)):
        if getattr(ns, name, None) is None:
            setattr(ns, name, default)
    dist = _dist_spec(ns)
    if dist is not None:
        try:
            dist.validate()
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    if ns.allow_remote and not ns.listen:
        raise UsageError("--allow-remote goes with --listen HOST:PORT")
    if ns.listen:
        host, _, port = ns.listen.rpartition(":")
        if not port.isdigit():
            raise UsageError("--listen takes PORT or HOST:PORT")
        if host.strip("[]") not in ("", "127.0.0.1", "localhost", "::1") and not ns.allow_remote:
            raise UsageError(f"--listen {ns.listen}: not a loopback address; add --allow-remote to listen there")
    if ns.report:
        rep = Path(ns.report).absolute()
        if rep.is_dir():
            raise UsageError(f"--report {ns.report} is a directory; give a file path like report.json")
        anc = rep.parent
        while not anc.exists() and anc != anc.parent:
            anc = anc.parent
        if not os.access(anc, os.W_OK):
            raise UsageError(f"--report {ns.report}: cannot write in {anc}")
    ConfigError = corelink.config_error_type()
    try:
        config = corelink.load_config(ns.config)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    except ImportError as exc:  # the config module is missing: run without one
        if ns.config:
            raise UsageError(f"cannot load configs: {exc}") from None
        config = None
    if ns.run_dir:
        run_dir = Path(ns.run_dir)
        if run_dir.is_dir() and RunDir(run_dir).has_run():
            raise UsageError(f"run directory {run_dir} already holds a run; choose another --run-dir")
        try:
            run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot create run directory {run_dir}: {exc}") from None
    else:
        run_dir = _default_run_dir(script)
    return config, run_dir


def _tui_available() -> tuple[bool, str]:
    try:
        import segwatch.tui.app as app  # noqa: F401
    except Exception as exc:  # ImportError, or a broken module
        return False, f"{type(exc).__name__}: {exc}"
    if not (hasattr(app, "run_app") or hasattr(app, "SegwatchApp")):
        return False, "segwatch.tui.app has no SegwatchApp"
    return True, ""


def _headless(asked: bool, instead: str) -> bool:
    """Whether to go on without the app: asked for (--headless), no terminal, or the app cannot
    load (said on stderr, with what segwatch does ``instead``)."""
    if asked or not sys.stdout.isatty():
        return True
    ok, why = _tui_available()
    if not ok:
        print(f"[segwatch] the app is not available ({why}); {instead}", file=sys.stderr)
    return not ok


def _open_app(client: Any = None, events: list | None = None, lang: str = "en", live: bool = True,
              meta: dict | None = None, title: str | None = None) -> Any:
    """Run the app on a client (live/attached) or a list of events (replay)."""
    import segwatch.tui.app as app
    from segwatch.runs import corelink

    if meta is None and client is not None:
        try:
            meta = client.meta()
        except Exception:
            meta = {}
    config = corelink.config_from_dict((meta or {}).get("config_resolved"))
    source = events if events is not None else client
    if hasattr(app, "run_app"):
        return app.run_app(source, lang=lang, live=live, title=title, config=config)
    kwargs: dict[str, Any] = {"lang": lang, "live": live}
    if events is not None:
        kwargs["events"] = events
    else:
        kwargs["client"] = client
    return app.SegwatchApp(**kwargs).run()


def cmd_run(argv: Sequence[str], demo_defaults: dict | None = None) -> int:
    try:
        if demo_defaults is not None:
            ns, script, script_args = demo_defaults["ns"], demo_defaults["script"], demo_defaults["args"]
        else:
            ns, script, script_args = _parse_run(argv)
            _slurm_defaults(ns)
        config, run_dir = _prepare_run(ns, script)
    except UsageError as exc:
        _err(str(exc))
        return EXIT_USAGE
    if demo_defaults is not None:
        demo_defaults["run_dir"] = run_dir
    from segwatch.doctor import quick_warnings   # package metadata only: no framework import
    for warning in quick_warnings():
        print(f"[segwatch] warning: {warning}", file=sys.stderr)

    if _headless(ns.headless, "running headless"):
        return _run_headless(ns, script, script_args, config, run_dir)
    return _run_with_app(ns, script, script_args, run_dir)


def _run_headless(ns: argparse.Namespace, script: str, script_args: list[str], config: Any, run_dir: Path) -> int:
    from segwatch.supervisor.process import set_child_subreaper
    from segwatch.supervisor.supervisor import Supervisor

    set_child_subreaper()
    from segwatch.supervisor.headless import tr

    print("[segwatch] " + tr("run_dir", ns.lang, run=run_dir), file=sys.stderr)
    sup = Supervisor(
        script, script_args, run_dir=run_dir, config=config, config_path=ns.config, headless=True,
        on_collapse=ns.on_collapse, on_nonfinite=ns.on_nonfinite, report_path=ns.report, debug=ns.debug,
        lang=ns.lang, interval=ns.interval, use_shim=not ns.no_shim, listen=ns.listen,
        allow_remote=ns.allow_remote, dist=_dist_spec(ns),
    )
    return sup.run()


def _run_with_app(ns: argparse.Namespace, script: str, script_args: list[str], run_dir: Path) -> int:
    from segwatch.runs import FINAL_STATUSES, RunStore, effective_status
    from segwatch.supervisor import RunClient

    spec = {
        "script": script, "script_args": script_args, "run_dir": str(run_dir.absolute()),
        "config_path": ns.config, "on_collapse": ns.on_collapse, "on_nonfinite": ns.on_nonfinite,
        "report_path": os.path.abspath(ns.report) if ns.report else None, "debug": ns.debug,
        "lang": ns.lang, "interval": ns.interval, "use_shim": not ns.no_shim, "listen": ns.listen,
        "allow_remote": ns.allow_remote,
    }
    dist = _dist_spec(ns)
    if dist is not None:
        spec["dist"] = dist.to_dict()
    store = RunStore(run_dir)
    log_fd = os.open(store.supervisor_log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "segwatch.supervisor", json.dumps(spec)],
            stdin=subprocess.DEVNULL, stdout=log_fd, stderr=log_fd, start_new_session=True, close_fds=True,
        )
    finally:
        os.close(log_fd)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if store.read_meta().get("supervisor_pid"):
            break
        if daemon.poll() is not None:
            break
        time.sleep(0.05)
    if not store.read_meta().get("supervisor_pid"):
        _err(f"the supervisor did not start; see {store.supervisor_log_path}")
        try:
            print(store.supervisor_log_path.read_text()[-2000:], file=sys.stderr)
        except OSError:
            pass
        return daemon.poll() or 1
    client = RunClient(run_dir)
    try:
        _open_app(client=client, lang=ns.lang, live=True, title=f"segwatch — {run_dir.name}")
    finally:
        client.close()
    meta = store.read_meta()
    status = effective_status(meta)
    if status in FINAL_STATUSES:
        daemon.poll()
        code = meta.get("exit_code")
        return int(code) if isinstance(code, int) else 1
    print(f"[segwatch] the training goes on in the background ({status}).\n"
          f"  re-open:  segwatch attach {run_dir}\n"
          f"  control:  segwatch ctl {run_dir} pause|resume|kill", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------- demo
def cmd_demo(argv: Sequence[str]) -> int:
    import segwatch.demo as demo_pkg

    argv = list(argv)
    tail: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, tail = argv[:i], argv[i + 1:]
    p = _run_parser("segwatch demo", demo=True)
    p.description = ("Run the bundled tiny RGB-D segmentation training (CPU, seconds) under segwatch. "
                     "Default policy: pause on collapse.")
    p.add_argument("--fault", metavar="NAME", help="inject a fault into the demo training (see the demo's --help)")
    ns = p.parse_args(argv)
    demo_dir = Path(demo_pkg.__file__).parent
    train = demo_dir / "train.py"
    cfg = demo_dir / "demo.yaml"
    if not train.is_file():
        _err(f"the demo training is missing: {train}")
        return EXIT_USAGE
    if ns.config is None and cfg.is_file():
        ns.config = str(cfg)
    if ns.on_collapse is None:
        # Paused with no app to resume it from, a headless demo would wait forever: there the
        # collapse ends the run instead (the report's action still shows the policy acting).
        headless = ns.headless or not sys.stdout.isatty()
        ns.on_collapse = "kill" if headless else "pause"
        if headless:
            print("segwatch: headless demo: the run is killed when the collapse is found "
                  "(with a terminal it pauses)", file=sys.stderr)
    script_args = (["--fault", ns.fault] if ns.fault else []) + tail
    defaults = {"ns": ns, "script": str(train), "args": script_args}
    code = cmd_run([], demo_defaults=defaults)
    if "run_dir" not in defaults or code == EXIT_USAGE:
        return code
    from segwatch.runs import REPORT

    report = _read_json(Path(ns.report) if ns.report else Path(defaults["run_dir"]) / REPORT)
    if not report:   # the app was closed and the training goes on: nothing has ended yet
        return code
    demo_code, line = demo_outcome(report, code, ns.lang)
    print(f"[segwatch] {line}", file=sys.stderr)
    return demo_code


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def demo_outcome(report: dict, code: int, lang: str = "en") -> tuple[int, str]:
    """The demo's exit status and its last line. The demo is there to show a fault being
    found and acted on: a run the policy paused or stopped showed it, so the demo exits 0
    even though the training itself died of SIGTERM (143); the line says the training's
    own status. Anything else (a crash, Ctrl-C, a fault not found) keeps the training's."""
    from segwatch.supervisor.headless import tr

    acted = [a for a in report.get("actions") or [] if isinstance(a, dict)
             and a.get("by") == "policy" and a.get("kind") in ("kill", "pause") and a.get("finding")]
    if acted:
        a = acted[0]
        return 0, tr("demo_shown", lang, finding=a["finding"], step=a.get("step"),
                     action=tr(f"demo_{a['kind']}", lang), code=code)
    return code, tr("demo_plain", lang, code=code)


# ---------------------------------------------------------------------- viewers
def _follow_headless(client: Any, lang: str, interval: float, state: Any = None) -> int:
    """Print what a headless run would print, from a client's events (attach --headless)."""
    from segwatch.runs import corelink
    from segwatch.supervisor.headless import finding_line, status_line

    meta = client.meta()
    config = corelink.config_from_dict(meta.get("config_resolved"))
    state = state or corelink.SafeState(config, lang)
    next_line = time.monotonic() + interval
    try:
        while True:
            batch = client.poll()
            for ev in batch:
                for f in state.ingest(ev):
                    print(finding_line(f, lang), file=sys.stderr, flush=True)
            if time.monotonic() >= next_line:
                next_line = time.monotonic() + interval
                print(status_line(state, getattr(state, "status", None), lang), file=sys.stderr, flush=True)
            if client.final:
                break
            if not batch:
                time.sleep(0.05)
    except KeyboardInterrupt:
        print("[segwatch] detached (the training goes on)", file=sys.stderr)
        return 0
    print(status_line(state, getattr(state, "status", None), lang), file=sys.stderr, flush=True)
    code = getattr(state, "exit_code", None)
    return int(code) if isinstance(code, int) else 0


def _is_glob(target: str) -> bool:
    """A quoted glob of run directories (``'runs/job-123/node*'``): a fleet."""
    return not target.startswith(("ssh://", "tcp://")) and any(c in target for c in "*?[")


def _is_fleet(fleet_file: str | None, targets: Sequence[str]) -> bool:
    """The targets are the nodes of one multi-node run: a fleet file, not exactly one target,
    or a glob."""
    return bool(fleet_file) or len(targets) != 1 or _is_glob(targets[0])


def cmd_attach(argv: Sequence[str]) -> int:
    from segwatch.supervisor import ControlError, RunClient

    p = argparse.ArgumentParser(prog="segwatch attach", allow_abbrev=False,
                                description="Open the app on a run: a run directory, ssh://host/path/to/run, "
                                            "or tcp://127.0.0.1:PORT (a run started with --listen); several "
                                            "targets (or --fleet FILE): the nodes of one multi-node run, merged.")
    p.add_argument("target", nargs="*")
    p.add_argument("--fleet", metavar="FILE", help="a fleet file: the nodes' targets (docs/DISTRIBUTED.md)")
    p.add_argument("--report", metavar="PATH", help="fleet: write the merged report when every node has ended")
    p.add_argument("--headless", action="store_true", help="no app: status lines and findings on stderr")
    p.add_argument("--lang", choices=LANGS, default="en")
    p.add_argument("--interval", type=float, default=5.0)
    p.add_argument("--token", help="token for tcp:// targets (or SEGWATCH_TOKEN)")
    ns = p.parse_args(argv)
    if _is_fleet(ns.fleet, ns.target):
        from segwatch.fleet.cli import attach as attach_fleet

        return attach_fleet(ns, ns.target)
    ns.target = ns.target[0]
    try:
        client = RunClient(ns.target, token=ns.token)
    except (FileNotFoundError, ValueError) as exc:
        _err(str(exc))
        return EXIT_USAGE
    except (OSError, ControlError) as exc:
        _err(f"cannot attach to {ns.target}: {exc}")
        return 1
    try:
        if _headless(ns.headless, "following headless"):
            code = _follow_headless(client, ns.lang, ns.interval)
        else:
            _open_app(client=client, lang=ns.lang, live=True, title=f"segwatch — {ns.target}")
            code = 0
        why = client.error()
        if why:
            _err(f"cannot follow {ns.target}: {why}")
            return 1
        return code
    finally:
        client.close()


def cmd_replay(argv: Sequence[str]) -> int:
    from segwatch.runs import Replayed

    p = argparse.ArgumentParser(prog="segwatch replay", allow_abbrev=False,
                                description="Rebuild a recorded run from its events and show it "
                                            "(several run directories or --fleet FILE: one multi-node run).")
    p.add_argument("run_dir", nargs="*")
    p.add_argument("--fleet", metavar="FILE", help="a fleet file: the nodes' run directories")
    p.add_argument("--headless", action="store_true", help="print the final status and the findings instead of the app")
    p.add_argument("--json", action="store_true",
                   help="print the report rebuilt from the events (the same as the live run's report.json)")
    p.add_argument("--lang", choices=LANGS, default=None)
    ns = p.parse_args(argv)
    if _is_fleet(ns.fleet, ns.run_dir):
        from segwatch.fleet.cli import replay as replay_fleet

        return replay_fleet(ns, ns.run_dir)
    ns.run_dir = ns.run_dir[0]
    # the app feeds the events to a state of its own: read them only (not twice); elsewhere
    # only the rebuilt state is needed, not the events
    app = not ns.json and not ns.headless and sys.stdout.isatty() and _tui_available()[0]
    try:
        rep = Replayed(ns.run_dir, ns.lang, keep_events=app, ingest=not app)
    except FileNotFoundError as exc:
        _err(str(exc))
        return EXIT_USAGE
    if ns.json:
        print(json.dumps(rep.report(), indent=2, ensure_ascii=False))
        return 0
    if not _headless(ns.headless, "printing instead"):
        _open_app(events=rep.event_list, lang=rep.lang, live=False, meta=rep.meta,
                  title=f"segwatch replay — {Path(rep.run_dir).name}")
        return 0
    print_replayed(rep)
    return 0


def print_replayed(rep: Any) -> None:
    """A replayed run (one run's or a fleet's) as ``replay --headless`` prints it: how many
    events were read, the final status line and every finding."""
    from segwatch.supervisor.headless import finding_line, status_line, tr

    print("[segwatch] " + tr("replayed", rep.lang, n=rep.events, run=rep.run_dir)
          + (tr("invalid_skipped", rep.lang, n=rep.invalid) if rep.invalid else ""))
    print(status_line(rep.state, rep.status, rep.lang))
    for f in list(getattr(rep.state, "findings", {}).values()):
        print(finding_line(f, rep.lang))


def cmd_report(argv: Sequence[str]) -> int:
    from segwatch.runs import RunDir, format_markdown, load_report

    p = argparse.ArgumentParser(prog="segwatch report", allow_abbrev=False,
                                description="Print a run's report (rebuilt from its events if it has none yet), "
                                            "write it as Markdown with charts, or pack the help-request bundle. "
                                            "Several run directories (or --fleet FILE): one multi-node run's merged report.")
    p.add_argument("run_dir", nargs="*")
    p.add_argument("--fleet", metavar="FILE", help="a fleet file: the nodes' run directories")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--json", action="store_true", help="the report JSON (schema segwatch.report/1)")
    g.add_argument("--markdown", action="store_true",
                   help="write report.md with SVG charts (into --out DIR, default RUN_DIR/report/) and print its path")
    g.add_argument("--bundle", action="store_true",
                   help="write the help-request .tar.gz (at --out PATH, default in RUN_DIR) and print its path")
    p.add_argument("--out", metavar="PATH", help="where --markdown / --bundle write")
    p.add_argument("--lang", choices=LANGS, default=None, help="language of the advice (rebuilds the report)")
    ns = p.parse_args(argv)
    if ns.out and not (ns.markdown or ns.bundle):
        _err("--out goes with --markdown or --bundle")
        return EXIT_USAGE
    if _is_fleet(ns.fleet, ns.run_dir):
        from segwatch.fleet.cli import report as report_fleet

        return report_fleet(ns, ns.run_dir)
    ns.run_dir = ns.run_dir[0]
    try:
        store = RunDir(ns.run_dir)
    except FileNotFoundError as exc:
        _err(str(exc))
        return EXIT_USAGE
    if ns.markdown or ns.bundle:
        lang = ns.lang or store.read_meta().get("lang") or "en"
        try:
            from segwatch.reporting import make_bundle, render_markdown
        except Exception as exc:  # the reporting package is missing or broken
            if ns.bundle:
                _err(f"cannot make a bundle: {type(exc).__name__}: {exc}")
                return 1
            print(f"[segwatch] charts are not available ({type(exc).__name__}: {exc}); plain Markdown instead",
                  file=sys.stderr)
            print(format_markdown(load_report(ns.run_dir, ns.lang)))
            return 0
        try:
            path = make_bundle(ns.run_dir, ns.out, lang=lang) if ns.bundle else render_markdown(ns.run_dir, ns.out, lang=lang)
        except FileNotFoundError as exc:
            _err(str(exc))
            return EXIT_USAGE
        except OSError as exc:
            _err(f"cannot write {ns.out or 'in ' + str(store.path)}: {exc}")
            return 1
        print(path)
        return 0
    print_report(load_report(ns.run_dir, ns.lang), ns.json, ns.lang)
    return 0


def print_report(rep: dict, as_json: bool, lang: str | None, tail: str | None = None) -> None:
    """A report as ``segwatch report`` prints it: the JSON, or the text in ``lang`` (None: the
    report's own); ``tail`` (a fleet's nodes, in that language) is printed after the text."""
    from segwatch.runs import format_text

    if as_json:
        print(json.dumps(rep, indent=2, ensure_ascii=False))
        return
    if (lang or rep.get("lang")) == "zh":
        from segwatch.supervisor.headless import report_text_zh

        print(report_text_zh(rep))
    else:
        print(format_text(rep))
    if tail is not None:
        print(tail)


def cmd_ls(argv: Sequence[str]) -> int:
    from segwatch.runs import list_runs

    p = argparse.ArgumentParser(prog="segwatch ls", allow_abbrev=False, description="List the runs in a directory.")
    p.add_argument("dir", nargs="?", default=DEFAULT_RUNS)
    ns = p.parse_args(argv)
    base = Path(ns.dir)
    if not base.is_dir():
        print(f"no runs: {base} does not exist")
        return 0
    rows = []
    for run in list_runs(base):
        w = run.worst
        rows.append((run.name, run.status, "-" if run.steps is None else str(run.steps),
                     f"{run.last_miou:.1f}" if run.last_miou is not None else "-",
                     f"{w.get('severity')} {w.get('id')}" if w else "-"))
    if not rows:
        print(f"no runs in {base}")
        return 0
    head = ("RUN", "STATUS", "STEPS", "mIoU", "WORST FINDING")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    for r in [head] + rows:
        print("  ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip())
    return 0


def cmd_init(argv: Sequence[str]) -> int:
    from segwatch.presets import PRESETS, render

    p = argparse.ArgumentParser(
        prog="segwatch init", allow_abbrev=False,
        description="Write a commented starting config for a common dataset: class names, C, the "
                    "ignore value its usual loaders produce, and `train.pretrained: none` (from scratch "
                    "on purpose). `segwatch check --config FILE` accepts it.")
    p.add_argument("--preset", required=True, choices=sorted(PRESETS), metavar="|".join(PRESETS))
    p.add_argument("--out", metavar="FILE", help="write here (default: print to stdout)")
    p.add_argument("--pretrained", metavar="CKPT", help="the checkpoint you load (default: none, from scratch)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    ns = p.parse_args(argv)
    text = render(ns.preset, ns.pretrained)
    if not ns.out:
        sys.stdout.write(text)
        return 0
    out = Path(ns.out)
    if out.exists() and not ns.force:
        _err(f"{out} exists; add --force to overwrite it")
        return EXIT_USAGE
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    except OSError as exc:
        _err(f"cannot write {out}: {exc}")
        return EXIT_USAGE
    print(f"wrote {out} ({ns.preset}); check it: segwatch check --config {out}", file=sys.stderr)
    return 0


def cmd_check(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="segwatch check", allow_abbrev=False,
                                description="Validate a config and print it resolved (exit 0 if valid, 2 if not).")
    p.add_argument("--config", required=True, metavar="CFG")
    ns = p.parse_args(argv)
    try:
        from segwatch import config as cfgmod
    except ImportError as exc:
        _err(f"cannot load configs: {exc}")
        return EXIT_USAGE
    if not os.path.isfile(ns.config):
        _err(f"config file not found: {ns.config}")
        return EXIT_USAGE
    try:
        cfg = cfgmod.load_config(ns.config)
    except cfgmod.ConfigError as exc:
        _err(str(exc))
        return EXIT_USAGE
    fmt = getattr(cfgmod, "format_config", None)
    print(fmt(cfg) if fmt else json.dumps(cfg.to_dict(), indent=2))
    return 0


def cmd_ctl(argv: Sequence[str], cmd: str | None = None) -> int:
    from segwatch.supervisor import ControlError, RunClient

    p = argparse.ArgumentParser(prog=f"segwatch {cmd or 'ctl'}", allow_abbrev=False,
                                description="Send a command to a live run's supervisor; several targets "
                                            "(a quoted glob, --fleet FILE): to every node of a multi-node run.")
    p.add_argument("run_dir", nargs="*" if cmd else "+", metavar="TARGET",
                   help="run directory (or ssh://host/path, tcp://127.0.0.1:PORT); several: a fleet"
                        + ("" if cmd else "; then the command: pause|resume|kill|ping"))
    p.add_argument("--fleet", metavar="FILE", help="a fleet file: every node's target (docs/DISTRIBUTED.md)")
    p.add_argument("--token", help="token for tcp:// targets")
    p.add_argument("--json", action="store_true", help="print the ack as JSON")
    ns = p.parse_args(argv)
    targets = list(ns.run_dir)
    if cmd is None:
        if not targets or targets[-1] not in ("pause", "resume", "kill", "ping"):
            p.error("the last argument must be the command: pause|resume|kill|ping")
        cmd = targets.pop()
    command = cmd
    if _is_fleet(ns.fleet, targets):
        return _ctl_fleet(targets, ns.fleet, command, ns.token, ns.json)
    ns.run_dir = targets[0]
    try:
        client = RunClient(ns.run_dir, token=ns.token)
        ack = client.control(command)
    except (FileNotFoundError, ValueError) as exc:
        _err(str(exc))
        return EXIT_USAGE
    except ControlError as exc:
        _err(str(exc))
        return 1
    if ns.json:
        print(json.dumps(ack))
    elif ack.get("ok"):
        extra = f" (status {ack['status']})" if ack.get("status") else ""
        print(f"{command}: ok{extra}")
    else:
        print(f"{command}: refused: {ack.get('error')}")
    return 0 if ack.get("ok") else 1


def _ctl_fleet(targets: list[str], fleet_file: str | None, command: str, token: str | None, as_json: bool) -> int:
    """``ctl`` on several nodes: the command to every node's supervisor (segwatch/fleet/control.py)."""
    from segwatch.fleet.control import control_fleet, fleet_lines
    from segwatch.fleet.targets import FleetError, fleet_nodes

    try:
        nodes = fleet_nodes(targets, fleet_file)
    except FleetError as exc:
        _err(str(exc))
        return EXIT_USAGE
    acks = control_fleet(nodes, command, token=token)
    if as_json:
        print(json.dumps([a.to_dict() for a in acks]))
    else:
        print("\n".join(fleet_lines(command, acks)))
    return 0 if acks and all(a.ok for a in acks) else 1


def cmd_relay(argv: Sequence[str]) -> int:
    from segwatch.supervisor.client import relay

    p = argparse.ArgumentParser(prog="segwatch relay", allow_abbrev=False,
                                description="Stream a run's events (stored, then live) to stdout as JSON lines and "
                                            "forward control lines from stdin (used by `attach ssh://...`).")
    p.add_argument("run_dir")
    ns = p.parse_args(argv)
    try:
        return relay(ns.run_dir)
    except FileNotFoundError as exc:
        _err(str(exc))
        return EXIT_USAGE


def cmd_doctor(argv: Sequence[str]) -> int:
    from segwatch.doctor import main as doctor_main
    return doctor_main(list(argv))


COMMANDS = {
    "run": ("launch a training script under segwatch", cmd_run),
    "demo": ("run the bundled tiny training (--fault NAME)", cmd_demo),
    "attach": ("open the app on a run dir, ssh://host/path or tcp://127.0.0.1:PORT", cmd_attach),
    "replay": ("open the app on a recorded run (--headless prints it)", cmd_replay),
    "report": ("a run's report (--json; --markdown, --bundle write files)", cmd_report),
    "ls": ("list runs", cmd_ls),
    "init": ("write a commented config for a dataset (--preset sunrgbd|nyudv2|cityscapes|ade20k|voc)",
             cmd_init),
    "check": ("validate a config (--config CFG)", cmd_check),
    "ctl": ("pause|resume|kill|ping a live run", cmd_ctl),
    "pause": ("pause a live run (= ctl RUN_DIR pause)", lambda a: cmd_ctl(a, "pause")),
    "resume": ("resume a paused run (= ctl RUN_DIR resume)", lambda a: cmd_ctl(a, "resume")),
    "kill": ("stop a live run (= ctl RUN_DIR kill)", lambda a: cmd_ctl(a, "kill")),
    "relay": ("JSON-lines bridge of a run over stdin/stdout (for SSH)", cmd_relay),
    "doctor": ("the environment as segwatch sees it (torch, torchvision, terminal, ssh, adapters)", cmd_doctor),
}


def _usage() -> str:
    lines = ["usage: segwatch COMMAND [ARGS...]", "", "commands:"]
    for name, (desc, _) in COMMANDS.items():
        lines.append(f"  {name:8s} {desc}")
    lines += ["", "`segwatch COMMAND --help` for a command's options.",
              "Example: segwatch run train.py --config cfg.yaml -- --lr 8e-5"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0 if argv else EXIT_USAGE
    if argv[0] in ("-V", "--version"):
        print(f"segwatch {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        _err(f"unknown command {name!r}")
        print(_usage(), file=sys.stderr)
        return EXIT_USAGE
    try:
        return COMMANDS[name][1](rest)
    except SystemExit as exc:  # argparse: --help (0) and usage errors (2)
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else EXIT_USAGE)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

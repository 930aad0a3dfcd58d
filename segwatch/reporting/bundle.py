"""The guide's help request in one file: ``make_bundle(run_dir, out_path=None)``.

When mIoU does not grow, the guide asks for: the first 100 training iterations of the
log, the config, and proof of which pretrained weights were loaded. The bundle
(``RUN_DIR/segwatch-bundle-<run>.tar.gz`` by default) holds, under one top folder:

    README.md               what is inside, and how the log was cut
    MANIFEST.json           every file with size and sha256, the log cut, the weights identity
    logs/stdout.log         the child's output up to the 100th training step (raw bytes)
    logs/stderr.log
    diagnostics/report.json segwatch's report, regenerated from the events (segwatch.report/1)
    diagnostics/report.md   the readable report, with its SVG charts
    diagnostics/run.json    script, argv, status, exit code, times, command, resolved config
    config/<file>           the config file the run used (or the resolved config as JSON)
    weights.json            load_state_dict calls (module / key counts) and the checkpoint
                            files named in argv or the config: path, size, sha256

The weights themselves are never included. ``meta.json`` is not copied either (it holds
the socket path, process ids and, with ``--listen``, a token): ``run.json`` carries the
parts that help.

How the log is cut: every ``output`` event in ``events.jsonl`` is stamped with the highest
training step the events before it carried; lines are kept up to the first line stamped
past step 100, and, when the lines print an iteration number that agrees with that step
counter, up to the first line printing an iteration past 100. The raw ``stdout.log`` /
``stderr.log`` are cut after the same number of lines (split the way the supervisor splits
them: at ``\\n`` or ``\\r``, blank lines skipped). Without step events the first
``FALLBACK_LINES`` lines are kept; the README says which rule applied.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from .markdown import RunData, write_markdown

#: training iterations of log the help request carries
MAX_ITERS = 100
#: lines kept when the log cannot be cut by step (no step counter in the events)
FALLBACK_LINES = 200
#: files whose names end like this are checkpoints (identity only, never copied)
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors")
BUNDLE_SCHEMA = "segwatch.bundle/1"

_EOL = re.compile(rb"[\r\n]")
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
# "iter 120", "Iter [120/4000]", "iteration: 120", "step 120", "it=120"
_ITER = re.compile(r"(?i)\b(?:iter(?:ation)?s?|it|step)\b\s*[:=#]?\s*\[?\s*(\d+)")


# ---------------------------------------------------------------------- log cut
def cut_outputs(outputs: list[tuple[str, str, int]], max_iters: int = MAX_ITERS) -> tuple[int, dict]:
    """How many of the run's ``output`` events belong to the first ``max_iters`` steps.

    ``outputs``: (stream, line, highest training step seen before the line). Returns
    (number of events kept, description of the rule used).
    """
    n = len(outputs)
    if not n:
        return 0, {"method": "none", "detail": "no output events"}
    if max(s for _, _, s in outputs) <= 0:
        keep = min(n, FALLBACK_LINES)
        return keep, {"method": "first_lines", "lines": FALLBACK_LINES,
                      "detail": f"no training step counter in the events: the first {FALLBACK_LINES} lines"}
    for i, (_, line, step) in enumerate(outputs):
        if step > max_iters:
            return i, {"method": "step_counter", "max_iters": max_iters, "cut_at_line": i,
                       "detail": f"cut before the first line seen after training step {step} > {max_iters}"}
        m = _ITER.search(line)
        if m:
            printed = int(m.group(1))
            # trust a printed iteration only when segwatch's step counter is close to it
            # (step events can lag the output by up to ~10 steps; a resumed run may print 5000)
            if printed > max_iters and printed - step <= 20:
                return i, {"method": "step_counter+printed_iteration", "max_iters": max_iters,
                           "cut_at_line": i,
                           "detail": f"cut before a line printing iteration {printed} > {max_iters} "
                                     f"(segwatch's step counter was at {step})"}
    return n, {"method": "step_counter", "max_iters": max_iters,
               "detail": f"the run has no output past training step {max_iters}: the whole log"}


def _segments(data: bytes) -> list[int]:
    """End offsets (exclusive, including the line end) of the non-blank lines of ``data``,
    split like the supervisor splits child output."""
    ends = []
    pos = 0
    for m in _EOL.finditer(data):
        seg = data[pos:m.start()]
        if _ANSI.sub("", seg.decode("utf-8", "replace")).strip():
            ends.append(m.end())
        pos = m.end()
    if pos < len(data) and _ANSI.sub("", data[pos:].decode("utf-8", "replace")).strip():
        ends.append(len(data))
    return ends


def truncate_log(data: bytes, lines: int, whole: bool) -> bytes:
    """The first ``lines`` non-blank lines of ``data`` (raw bytes, up to the line end)."""
    if whole:
        return data
    if lines <= 0:
        return b""
    ends = _segments(data)
    if lines > len(ends):
        return data
    return data[: ends[lines - 1]]


# ---------------------------------------------------------------------- weights
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _strings(obj: Any):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _strings(v)


def _is_checkpoint(s: str) -> bool:
    return s.lower().endswith(CHECKPOINT_SUFFIXES)


def checkpoint_candidates(rd: RunData) -> list[tuple[str, str, Path]]:
    """(where, as written, resolved path) for every checkpoint-like string in the script's
    argv and in the config file."""
    seen: set[str] = set()
    out: list[tuple[str, str, Path]] = []
    cwd = Path(rd.cwd) if rd.cwd else Path.cwd()

    def add(where: str, s: str, base: Path) -> None:
        s = s.strip().strip("'\"")
        if not s or not _is_checkpoint(s) or len(s) > 4096:
            return
        p = Path(os.path.expanduser(s))
        if not p.is_absolute():
            p = base / p
        key = str(p)
        if key in seen:
            return
        seen.add(key)
        out.append((where, s, p))

    for tok in rd.script_argv:
        if tok.startswith("-") and "=" in tok:   # --weights=path.pth
            tok = tok.split("=", 1)[1]
        add("argv", tok, cwd)
    cfg_path = rd.config_path
    if cfg_path:
        p = Path(cfg_path)
        if not p.is_absolute():
            p = cwd / p
        try:
            import yaml

            with open(p, "rb") as fh:
                doc = yaml.safe_load(fh)
        except Exception:
            doc = None
        for s in _strings(doc):
            add("config", s, cwd)
            # relative to the config file's folder too, if that is where it exists
            if not Path(s).is_absolute() and _is_checkpoint(s) and (p.parent / s).exists():
                add("config", s, p.parent)
    return out


def weights_identity(rd: RunData) -> dict:
    loads = []
    for e in rd.state_dict_events:
        loads.append({k: e.get(k) for k in ("step", "module", "total", "loaded", "missing", "unexpected",
                                            "strict", "examples_missing", "examples_unexpected", "error")})
    files = []
    for where, given, path in checkpoint_candidates(rd):
        entry: dict[str, Any] = {"given": given, "source": where, "path": str(path)}
        try:
            if path.is_file():
                st = path.stat()
                entry.update(exists=True, size=st.st_size, mtime=st.st_mtime, sha256=_sha256(path))
            else:
                entry.update(exists=False)
        except OSError as exc:
            entry.update(exists=path.exists(), error=f"{type(exc).__name__}: {exc}")
        files.append(entry)
    return {"load_state_dict": loads, "checkpoints": files,
            "note": "identity only: the weights themselves are not in the bundle"}


# ---------------------------------------------------------------------- bundle
def _run_json(rd: RunData) -> dict:
    meta = rd.meta
    keep = ("segwatch", "script", "argv", "cwd", "status", "exit_code", "started", "ended", "command",
            "config", "config_resolved", "policy", "lang", "headless", "shim", "debug", "protocol")
    d = {k: meta.get(k) for k in keep if k in meta}
    hello = rd.hello or {}
    for k in ("python", "torch", "device", "cuda", "shim_version"):
        if hello.get(k) is not None:
            d.setdefault(k, hello.get(k))
    d["status"] = rd.status
    if "config_resolved" not in d and isinstance(hello.get("config"), dict):
        d["config_resolved"] = hello.get("config")
    return d


def _readme(rd: RunData, name: str, cut: dict, kept: dict, total: dict, weights: dict) -> str:
    lines = [
        f"# segwatch help-request bundle: `{name}`",
        "",
        f"Script: `{rd.script}` {' '.join(rd.script_argv)}".rstrip(),
        f"Status: {rd.status}, exit code {rd.report.get('exit_code')}, {rd.state.step} training steps.",
        "",
        "## Contents",
        "",
        "- `logs/stdout.log`, `logs/stderr.log`: the training's own output, first "
        f"{MAX_ITERS} training iterations (raw bytes, as the script wrote them)",
        "- `diagnostics/report.json`: segwatch's report (schema `segwatch.report/1`), regenerated from the events",
        "- `diagnostics/report.md` (+ `*.svg`): the same, readable, with curves and the confusion matrix",
        "- `diagnostics/run.json`: command, arguments, times, exit status, the resolved segwatch config",
        "- `config/`: the config file the run used",
        "- `weights.json`: which pretrained weights were loaded (key counts per `load_state_dict` call) "
        "and the checkpoint files named in the arguments or the config (path, size, sha256). "
        "The weights themselves are not included.",
        "- `MANIFEST.json`: every file with its size and sha256",
        "",
        "## How the log was cut",
        "",
        f"Rule: **{cut.get('method')}** — {cut.get('detail')}.",
        "",
    ]
    if cut.get("method", "").startswith("step_counter"):
        lines.append("Each line the script printed is stamped with the highest training step (backward call) "
                     "segwatch had seen when the line arrived. Step reports can trail the output by a few "
                     "steps (the instrumentation reads losses back in batches of up to 10 steps), so when the "
                     "lines print an iteration number that agrees with that counter, the printed number "
                     "decides. Lines that print no iteration number can therefore run a few iterations "
                     f"past {MAX_ITERS}.")
    elif cut.get("method") == "first_lines":
        lines.append("The events carry no training step counter, so the log is cut by line count.")
    lines.append("")
    for s in ("stdout", "stderr"):
        if s in total:
            lines.append(f"- {s}: {kept.get(s, 0)} of {total[s]} lines kept")
    lines.append("")
    n_ck = len(weights.get("checkpoints") or [])
    n_ld = len(weights.get("load_state_dict") or [])
    lines.append(f"Weights: {n_ld} `load_state_dict` call(s) observed, {n_ck} checkpoint path(s) named.")
    lines.append("")
    return "\n".join(lines)


def make_bundle(run_dir: str | os.PathLike, out_path: str | os.PathLike | None = None,
                lang: str | None = "en") -> Path:
    """Write the help-request ``.tar.gz`` of a run directory; returns its path.

    ``out_path``: the file to write (a name ending in ``.tar.gz`` / ``.tgz``), or a folder
    (existing, or any other name) that gets ``segwatch-bundle-<run>.tar.gz``; default: the
    run directory itself. ``lang``: of report.md / the advice ("en", "zh", None = the run's)."""
    if lang not in ("en", "zh", None):
        raise ValueError(f"lang must be 'en' or 'zh', got {lang!r}")
    rd = RunData(run_dir, lang)
    run_name = rd.run_dir.name or "run"
    name = f"segwatch-bundle-{run_name}"
    out = Path(out_path) if out_path is not None else rd.run_dir / f"{name}.tar.gz"
    if out.is_dir() or not out.name.endswith((".tar.gz", ".tgz")):
        out = out / f"{name}.tar.gz"   # a folder: the default name inside it
    out.parent.mkdir(parents=True, exist_ok=True)

    files: dict[str, bytes] = {}
    descr: dict[str, str] = {}

    # logs ------------------------------------------------------------------
    n_keep, cut = cut_outputs(rd.outputs)
    kept: dict[str, int] = {}
    total: dict[str, int] = dict(rd.output_totals)
    for stream, _, _ in rd.outputs[:n_keep]:
        kept[stream] = kept.get(stream, 0) + 1
    whole = n_keep >= sum(total.values())
    for stream in ("stdout", "stderr"):
        data = rd.store.read_log(stream)
        if data is not None:
            if not rd.outputs:
                ends = _segments(data)
                total[stream] = len(ends)
                kept[stream] = min(len(ends), FALLBACK_LINES)
                cut = {"method": "first_lines", "lines": FALLBACK_LINES,
                       "detail": f"no output events: the first {FALLBACK_LINES} lines of each log"}
                text = truncate_log(data, FALLBACK_LINES, False)
            else:
                text = truncate_log(data, kept.get(stream, 0), whole)
            desc = "raw child output, cut (see README)"
        elif total.get(stream):
            # no raw log (e.g. a recorded fixture): the lines from the output events
            text = "".join(line + "\n" for s, line, _ in rd.outputs[:n_keep] if s == stream).encode()
            desc = "child output rebuilt from output events (no raw log), cut (see README)"
        else:
            continue
        files[f"logs/{stream}.log"] = text
        descr[f"logs/{stream}.log"] = desc

    # diagnostics -----------------------------------------------------------
    files["diagnostics/report.json"] = (json.dumps(rd.report, indent=2, ensure_ascii=False) + "\n").encode()
    descr["diagnostics/report.json"] = "segwatch report (segwatch.report/1), regenerated from the events"
    with tempfile.TemporaryDirectory(prefix="segwatch-bundle-") as tmp:
        md = write_markdown(rd, Path(tmp) / "report")
        for p in sorted(md.parent.iterdir()):
            if p.is_file():
                arc = f"diagnostics/{p.name}"
                files[arc] = p.read_bytes()
                descr[arc] = "readable report" if p.suffix == ".md" else "chart of the readable report"
    files["diagnostics/run.json"] = (json.dumps(_run_json(rd), indent=2, ensure_ascii=False, default=str)
                                     + "\n").encode()
    descr["diagnostics/run.json"] = "command, arguments, times, exit status, resolved config"

    # config ----------------------------------------------------------------
    cfg_added = False
    if rd.config_path:
        p = Path(rd.config_path)
        if not p.is_absolute() and rd.cwd:
            p = Path(rd.cwd) / p
        try:
            if p.is_file() and p.stat().st_size <= 16 << 20:
                files[f"config/{p.name}"] = p.read_bytes()
                descr[f"config/{p.name}"] = f"the config file ({p})"
                cfg_added = True
        except OSError:
            pass
    if not cfg_added:
        resolved = rd.meta.get("config_resolved") or (rd.hello or {}).get("config")
        if resolved:
            files["config/segwatch-config.json"] = (json.dumps(resolved, indent=2, ensure_ascii=False)
                                                    + "\n").encode()
            descr["config/segwatch-config.json"] = "the resolved segwatch config (the config file was not found)"

    # weights ---------------------------------------------------------------
    weights = weights_identity(rd)
    files["weights.json"] = (json.dumps(weights, indent=2, ensure_ascii=False, default=str) + "\n").encode()
    descr["weights.json"] = "pretrained weights identity: load_state_dict key counts, checkpoint size + sha256"

    files["README.md"] = _readme(rd, name, cut, kept, total, weights).encode()
    descr["README.md"] = "what is inside"

    manifest = {
        "schema": BUNDLE_SCHEMA,
        "run": run_name,
        "run_dir": str(rd.run_dir),
        "created": time.time(),
        "script": rd.script,
        "status": rd.status,
        "exit_code": rd.report.get("exit_code"),
        "steps": int(rd.state.step),
        "log_cut": dict(cut, kept_lines=kept, total_lines=total),
        "weights": weights,
        "files": [{"path": k, "size": len(v), "sha256": hashlib.sha256(v).hexdigest(), "what": descr.get(k, "")}
                  for k, v in sorted(files.items())],
    }
    files["MANIFEST.json"] = (json.dumps(manifest, indent=2, ensure_ascii=False, default=str) + "\n").encode()

    now = time.time()
    fd, tmp_out = tempfile.mkstemp(prefix=f".{out.name}.", dir=str(out.parent))
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh, tarfile.open(fileobj=fh, mode="w:gz") as tar:
            order = ["README.md", "MANIFEST.json"] + sorted(k for k in files if k not in ("README.md", "MANIFEST.json"))
            for arc in order:
                data = files[arc]
                info = tarfile.TarInfo(f"{name}/{arc}")
                info.size = len(data)
                info.mtime = int(now)
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(data))
        os.replace(tmp_out, out)
    except BaseException:
        try:
            os.unlink(tmp_out)
        except OSError:
            pass
        raise
    return out

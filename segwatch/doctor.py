"""``segwatch doctor [--json] [--frameworks torchvision,mmengine]``: the environment as segwatch sees it, and ``run``'s one-line warnings.

Frameworks are imported in a child process (``python -m segwatch.doctor --probe-imports``):
a broken build can raise anything, or crash the interpreter, and doctor must still print the
rest.  ``quick_warnings`` is what ``segwatch run`` calls before it launches: it reads package
metadata only (no import: importing torchvision or transformers would cost seconds before
every run) and names the known broken combination, a torchvision built for another torch.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

# import name -> (distribution names, what segwatch does with it)
FRAMEWORKS = {
    "torchvision": (("torchvision",), "models and transforms used by many trainings"),
    "lightning": (("lightning", "pytorch-lightning"), "adapter lightning (SegwatchCallback)"),
    "transformers": (("transformers",), "adapter hf (SegwatchTrainerCallback)"),
    "mmengine": (("mmengine",), "adapter mmseg (SegwatchHook on every Runner)"),
    "mmseg.models": (("mmsegmentation",), "mmsegmentation models (needs mmcv.ops)"),
    "timm": (("timm",), "backbones"),
    "segmentation_models_pytorch": (("segmentation-models-pytorch", "segmentation_models_pytorch"), "models"),
    "torchmetrics": (("torchmetrics",), "metrics"),
}
# the adapter ``adapter: auto`` arms for a framework
ADAPTER_OF = {"lightning": "lightning", "transformers": "hf", "mmengine": "mmseg"}
NMS_MISSING = "operator torchvision::nms does not exist"


def dist_version(*names: str) -> str | None:
    from importlib import metadata   # ~25 ms: only when asked (``segwatch run`` often never asks)

    for name in names:
        try:
            return metadata.version(name)
        except Exception:   # not installed (PackageNotFoundError) or unreadable metadata
            continue
    return None


def dist_requires(name: str) -> list[str] | None:
    """The distribution's declared requirements, or None when they cannot be read."""
    try:
        from importlib import metadata
        return metadata.requires(name)
    except Exception:
        return None


def _split(version: str) -> tuple[tuple[int, ...], str]:
    """'2.13.0+cpu' -> ((2, 13, 0), 'cpu')."""
    base, _, local = version.partition("+")
    nums = tuple(int(x) for x in re.findall(r"\d+", base)[:3])
    return nums, local


def matching_torchvision(torch_version: str) -> str:
    """The torchvision release built for a torch release (0.(minor+15).patch since torch 2.0),
    with the pip command that installs the build of the same flavour (CPU or CUDA)."""
    (major, minor, *rest), local = _split(torch_version)
    patch = rest[0] if rest else 0
    tv = f"0.{minor + 15}.{patch}" if major == 2 else "?"
    if local.startswith("cpu"):
        return f"torchvision=={tv} --index-url https://download.pytorch.org/whl/cpu"
    if local.startswith("cu"):
        return f"torchvision=={tv} --index-url https://download.pytorch.org/whl/{local}"
    return f"torchvision=={tv}"


def torchvision_mismatch(torch_version: str | None, tv_version: str | None, tv_requires: list[str] | None = None
                         ) -> str | None:
    """Why this torchvision cannot work beside this torch (from versions alone), or None."""
    if not torch_version or not tv_version:
        return None
    (t_major, t_minor, *_), t_local = _split(torch_version)
    (v_major, v_minor, *_), v_local = _split(tv_version)
    if t_major == 2 and v_major == 0 and v_minor != t_minor + 15:
        return f"torchvision {tv_version} is built for another torch than {torch_version}"
    for req in tv_requires or []:
        m = re.match(r"\s*torch\s*==\s*([\w.+]+)", req)
        if m and _split(m.group(1))[0] != _split(torch_version)[0]:
            return f"torchvision {tv_version} requires torch=={m.group(1)}, not {torch_version}"
    if t_local.startswith("cpu") and not v_local.startswith("cpu") and sys.platform.startswith("linux"):
        return (f"torchvision {tv_version} is a CUDA build (PyPI's default on Linux) beside a CPU torch "
                f"{torch_version}: its import fails with '{NMS_MISSING}'")
    return None


def quick_warnings() -> list[str]:
    """One-line warnings for ``segwatch run``, from package metadata only (milliseconds)."""
    out = []
    try:
        # most environments have no torchvision: finding that out from the import system
        # takes microseconds, while the metadata scan below takes ~50 ms, all of it before
        # the training can start
        from importlib.util import find_spec
        if find_spec("torchvision") is None:
            return out
        torch_v = dist_version("torch")
        tv = dist_version("torchvision")
        reqs = dist_requires("torchvision") if tv else None
        why = torchvision_mismatch(torch_v, tv, reqs)
        if why:
            out.append(f"{why}; pip install {matching_torchvision(torch_v)} (see segwatch doctor)")
    except Exception:
        pass
    return out


# --------------------------------------------------------------------------- imports
def probe_imports(names=None) -> dict:
    """In this process: {import name: {"ok": bool, "error": "Type: message"}} (used in the child)."""
    import importlib

    res = {}
    for name in names or FRAMEWORKS:
        try:
            importlib.import_module(name)
            res[name] = {"ok": True}
        except BaseException as exc:  # a broken build raises anything
            msg = str(exc).strip().splitlines()
            res[name] = {"ok": False, "error": f"{type(exc).__name__}: {msg[-1] if msg else ''}"[:300]}
    return res


def check_imports(names: list[str], timeout: float = 180.0) -> dict:
    """Import each name in a child process; a crash or a timeout is reported, never raised."""
    if not names:
        return {}
    env = os.environ.copy()
    for k in ("SEGWATCH_RUN_DIR", "SEGWATCH_SOCKET"):
        env.pop(k, None)
    try:
        proc = subprocess.run([sys.executable, "-m", "segwatch.doctor", "--probe-imports", *names],
                              capture_output=True, text=True, timeout=timeout, env=env)
        for line in reversed(proc.stdout.splitlines()):
            if line.startswith("{"):
                return json.loads(line)
        why = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
    except subprocess.TimeoutExpired:
        why = f"the import took more than {timeout:.0f} s"
    except Exception as exc:
        why = f"{type(exc).__name__}: {exc}"
    return {n: {"ok": False, "error": f"import check failed: {why}"} for n in names}


# --------------------------------------------------------------------------- report
def torch_info() -> dict:
    try:
        import torch
        info = {"version": torch.__version__, "cuda_build": torch.version.cuda,
                "cuda_available": bool(torch.cuda.is_available())}
        if info["cuda_available"]:
            info["devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        return info
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def terminal_info() -> dict:
    size = shutil.get_terminal_size(fallback=(0, 0))
    env = os.environ
    colours = "none (NO_COLOR set)" if env.get("NO_COLOR") else (
        "truecolor" if env.get("COLORTERM", "").lower() in ("truecolor", "24bit") else
        "256" if "256color" in env.get("TERM", "") else
        "basic" if env.get("TERM") not in (None, "", "dumb") else "none")
    return {"columns": size.columns, "lines": size.lines, "term": env.get("TERM"),
            "colorterm": env.get("COLORTERM"), "colours": colours, "stdout_tty": sys.stdout.isatty()}


def ssh_info() -> dict:
    sshd = shutil.which("sshd") or next((p for p in ("/usr/sbin/sshd", "/usr/local/sbin/sshd") if os.path.exists(p)), None)
    return {"ssh": shutil.which("ssh"), "sshd": sshd}


def collect(import_timeout: float = 180.0, only: list[str] | None = None) -> dict:
    """Everything doctor prints; ``only``: check just these frameworks (the others: not checked)."""
    installed = {name: dist_version(*dists) for name, (dists, _) in FRAMEWORKS.items()
                 if not only or name in only}
    imports = check_imports([n for n, v in installed.items() if v], timeout=import_timeout)
    frameworks = {}
    for name, (_, role) in FRAMEWORKS.items():
        if name not in installed:
            continue
        entry = {"installed": installed[name], "role": role}
        if installed[name]:
            entry.update(imports.get(name, {"ok": False, "error": "not checked"}))
        frameworks[name] = entry
    t = torch_info()
    tv = frameworks.get("torchvision", {})
    if tv.get("installed") and not tv.get("ok") and t.get("version"):
        tv["matching_build"] = matching_torchvision(t["version"])
        tv["why"] = torchvision_mismatch(t["version"], tv["installed"], dist_requires("torchvision"))
    mm = frameworks.get("mmseg.models", {})
    if mm.get("installed") and "mmcv._ext" in str(mm.get("error", "")):
        mm["why"] = ("mmcv-lite has no compiled ops (mmcv._ext) and mmseg imports mmcv.ops; install a "
                     "full mmcv built for this torch (segwatch's tests use a stand-in: docs/ADAPTERS.md)")
    arm = ["dformer (Metrics-like classes; no framework needed)"]
    for name, adapter in ADAPTER_OF.items():
        f = frameworks.get(name, {})
        if f.get("installed") and f.get("ok"):
            arm.append(f"{adapter} ({name} {f['installed']})")
    try:
        import textual
        textual_v = getattr(textual, "__version__", None) or dist_version("textual")
    except Exception as exc:
        textual_v = f"cannot import: {type(exc).__name__}: {exc}"
    from segwatch import __version__
    return {"segwatch": __version__, "python": sys.version.split()[0], "executable": sys.executable,
            "torch": t, "frameworks": frameworks, "textual": textual_v, "terminal": terminal_info(),
            "ssh": ssh_info(), "adapters_armed": arm}


def format_report(d: dict) -> str:
    lines = [f"segwatch {d['segwatch']}  python {d['python']}  ({d['executable']})"]
    t = d["torch"]
    if "error" in t:
        lines.append(f"torch: cannot import: {t['error']}")
    else:
        cuda = f"CUDA {t['cuda_build']} build" if t.get("cuda_build") else "CPU build"
        avail = ("GPU available: " + ", ".join(t.get("devices", []))) if t["cuda_available"] else "no GPU available"
        lines.append(f"torch {t['version']} ({cuda}; {avail})")
    lines.append("frameworks:")
    for name, f in d["frameworks"].items():
        if not f["installed"]:
            lines.append(f"  {name:<28} not installed")
            continue
        state = "ok" if f.get("ok") else f"CANNOT IMPORT: {f.get('error')}"
        lines.append(f"  {name:<28} {f['installed']:<12} {state}")
        if f.get("why"):
            lines.append(f"  {'':<28} why: {f['why']}")
        if f.get("matching_build"):
            lines.append(f"  {'':<28} matching build: pip install {f['matching_build']}")
    lines.append(f"textual {d['textual']}")
    term = d["terminal"]
    size = f"{term['columns']}x{term['lines']}" if term["columns"] else "unknown (not a terminal)"
    lines.append(f"terminal: {size}, TERM={term['term']}, colours: {term['colours']}"
                 + ("" if term["stdout_tty"] else " (stdout is not a tty: segwatch run goes headless)"))
    s = d["ssh"]
    lines.append(f"ssh: {s['ssh'] or 'not found'}; sshd: {s['sshd'] or 'not found'}"
                 + ("" if s["ssh"] else " (attach ssh://host/run needs an ssh client)"))
    lines.append("adapters that would arm (adapter: auto): " + "; ".join(d["adapters_armed"]))
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--probe-imports"]:
        print(json.dumps(probe_imports(argv[1:] or None)), flush=True)
        return 0
    only = None
    if "--frameworks" in argv[:-1]:
        only = argv[argv.index("--frameworks") + 1].split(",")
    d = collect(only=only)
    if "--json" in argv:
        print(json.dumps(d, indent=1))
    else:
        print(format_report(d))
    return 0


if __name__ == "__main__":
    sys.exit(main())

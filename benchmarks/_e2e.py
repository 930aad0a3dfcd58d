"""End-to-end overhead: ``segwatch run --headless train.py`` against ``python train.py``.

The whole process is timed, from launch to exit (after one untimed short run of each, with
Python's bytecode cache on, as for an installed segwatch; see ``bytecode_env``): python start-up, the supervisor, the
shim's import and discovery, every evaluation pass and the final report. The training is
the overhead bench's tiny CPU segmentation net (two strided conv+BN+ReLU blocks and a 1x1
head, batch 4x3x96x96, 37 classes) for ``steps`` optimizer steps, with an evaluation pass
(8 batches, the script prints its mIoU) every 250 steps and at the end.

Two controls make the ratio a measurement of segwatch's own work rather than of the machine:

* **The allocator is pinned** (``--malloc pinned``, the default): both commands run with
  ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` fixed. glibc otherwise moves its
  mmap threshold with the allocation history, and this training's ~300 kB activations then
  come either from fresh mmap'd pages (a page fault per 4 kB, ~0.7-1.5 million faults per 300
  steps measured here, 2-4 s of system time) or from the heap: the same command ran 10-25 %
  apart from one run to the next, and a segwatch run (whose imports and probes change that
  history) could come out *faster* than plain. ``--malloc default`` measures glibc as is.
* **Paired rounds** (``--order paired``, the default): plain and segwatch run at the same time,
  each on its own core (one torch thread each; the machine needs 2+ CPUs), so a change of the
  machine's speed (a VM's neighbours) hits both alike; the ratio of each round is taken
  between runs that shared the same minutes. ``--order alternate`` runs them one after the
  other, the order swapped each round.
* **Pinned CPUs** (``--cpus pinned``, the default in paired rounds): each command runs on
  its own core(s), swapped every round; segwatch's supervisor shares the training's core, so
  its own CPU time (~2 % of a core) is charged to segwatch. Left to the scheduler (``--cpus
  free``), three processes on two cores migrated between them, and rounds ran from 0.95 to
  1.16 (segwatch "faster" than plain in some) on this 2-CPU VM.

The ratio is the median over rounds of (segwatch wall / plain wall of the same round).

    python benchmarks/_e2e.py [--steps 1000] [--rounds 3] [--order paired|alternate] [--malloc pinned|default]

``measure_e2e(steps, rounds)`` returns the ratio; benchmarks/overhead.py imports it.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAIN_SCRIPT = r'''
import sys, time
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset
t_start = time.perf_counter()   # after torch's import, which the shim does before the script

C = 37
STEPS = int(sys.argv[1])
THREADS = int(sys.argv[2]) if len(sys.argv) > 2 else 1
EVAL_EVERY = 250
torch.manual_seed(0)
torch.set_num_threads(THREADS)


class TinySeg(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc1 = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU())
        self.enc2 = nn.Sequential(nn.Conv2d(16, 32, 3, 2, 1), nn.BatchNorm2d(32), nn.ReLU())
        self.head = nn.Conv2d(32, C, 1)

    def forward(self, x):
        y = self.head(self.enc2(self.enc1(x)))
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


def loader(n, seed, shuffle):
    g = torch.Generator().manual_seed(seed)
    imgs = torch.randn(n, 3, 96, 96, generator=g)
    # labels follow the image (a learnable task): class from the mean of a blurred channel
    labs = ((F.avg_pool2d(imgs[:, :1], 9, 1, 4) * 60).long() % C).squeeze(1)
    return DataLoader(TensorDataset(imgs, labs), batch_size=4, shuffle=shuffle)


def evaluate(model, val):
    model.eval()
    inter = torch.zeros(C)
    union = torch.zeros(C)
    with torch.no_grad():
        for img, lab in val:
            pred = model(img).argmax(1)
            for c in range(C):
                p, t = pred == c, lab == c
                inter[c] += (p & t).sum()
                union[c] += (p | t).sum()
    model.train()
    present = union > 0
    return float((inter[present] / union[present]).mean() * 100)


model = TinySeg()
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
crit = nn.CrossEntropyLoss(ignore_index=255)
train, val = loader(64, 0, True), loader(32, 1, False)
step = 0
while step < STEPS:
    for img, lab in train:
        loss = crit(model(img), lab)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % EVAL_EVERY == 0 or step == STEPS:
            print(f"step {step} loss {loss.item():.4f} mIoU: {evaluate(model, val):.2f}", flush=True)
        if step >= STEPS:
            break
print(f"train_s {time.perf_counter() - t_start:.3f}", flush=True)
'''


def _write_script(folder: Path) -> Path:
    path = folder / "e2e_train.py"
    path.write_text(TRAIN_SCRIPT)
    return path


def _config(folder: Path) -> Path:
    path = folder / "e2e.yaml"
    path.write_text("dataset: {num_classes: 37, ignore_index: 255}\n")
    return path


def bytecode_env(folder: Path) -> dict:
    """The environment for the timed commands: Python may cache bytecode (in ``folder``, not
    in the source tree). A development shell may set PYTHONDONTWRITEBYTECODE, and then every
    start of segwatch (an editable install) compiles its ~60 modules from source, while torch
    (installed with its .pyc files) does not: a cost an installed segwatch does not have."""
    import segwatch

    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(folder / "pycache")
    # compiled ahead, as ``pip install`` does; then the modules a segwatch command imports
    # from the standard library and numpy (their cached bytecode now goes to the prefix too)
    subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.dirname(segwatch.__file__)], env=env,
                   stdout=subprocess.DEVNULL, check=False)
    subprocess.run([sys.executable, "-c", "import segwatch.cli, segwatch.supervisor.supervisor, "
                    "segwatch.supervisor.replay, segwatch.core.state, segwatch.config, psutil"], env=env, check=False)
    return env


#: ``--malloc pinned``: glibc's thresholds fixed (the dynamic mmap threshold off)
PINNED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(16 << 20), "MALLOC_TRIM_THRESHOLD_": str(256 << 20)}


def _start(cmd: list[str], cwd: Path, env: dict | None, name: str, cpus: set[int] | None = None) -> dict:
    # output to files, not pipes: two jobs run at once and are reaped one after the other
    out, err = open(cwd / f"{name}.out", "w+b"), open(cwd / f"{name}.err", "w+b")
    # the affinity is set before exec, so the whole tree (supervisor and training) inherits it
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    return {"proc": subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=err, env=env, preexec_fn=pin),
            "t0": time.perf_counter(), "cmd": cmd, "cwd": cwd, "files": (out, err)}


def _train_seconds(out: bytes, log: Path) -> float | None:
    """The ``train_s`` the script printed: in its stdout, or (under segwatch, whose child's
    stdout is also kept in the run dir) in the run's stdout.log."""
    text = out.decode(errors="replace")
    if "train_s " not in text and log.exists():
        text = log.read_text()
    train = None
    for line in text.splitlines():
        if line.startswith("train_s "):
            train = float(line.split()[1])
    return train


def _reap_all(jobs: dict[str, dict], log_dir: Path | None = None) -> dict[str, dict]:
    """Wait for the jobs from ``_start`` in the order they end: each one's wall time (to its
    own exit), its CPU time (the process and the descendants it waited for, from ``wait4``:
    separable while two jobs run at once) and the ``train_s`` it printed."""
    by_pid = {job["proc"].pid: name for name, job in jobs.items()}
    res: dict[str, dict] = {}
    while by_pid:
        pid, status, ru = os.wait4(-1, 0)
        name = by_pid.pop(pid, None)
        if name is None:
            continue
        job = jobs[name]
        wall = time.perf_counter() - job["t0"]
        job["proc"].returncode = code = os.waitstatus_to_exitcode(status)
        out, err = (f.seek(0) or f.read() for f in job["files"])
        for f in job["files"]:
            f.close()
        if code != 0:
            raise RuntimeError(f"{' '.join(job['cmd'])} exited {code}:\n{err.decode(errors='replace')[-2000:]}")
        train = _train_seconds(out, (log_dir or job["cwd"] / "run") / "stdout.log")
        res[name] = {"wall": wall, "cpu": ru.ru_utime + ru.ru_stime, "top_cpu": None, "train": train,
                     "minflt": ru.ru_minflt}
    return res


def _timed(cmd: list[str], cwd: Path, env: dict | None = None) -> dict:
    """Run ``cmd`` to its end. Returns ``wall`` (seconds), ``cpu`` (CPU seconds of the whole
    process tree), ``top_cpu`` (CPU seconds of the top process alone: the supervisor under
    segwatch, sampled until it exits) and ``train`` (the ``train_s`` the script prints)."""
    import psutil

    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    top_cpu = 0.0
    try:
        ps = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                ct = ps.cpu_times()
                top_cpu = ct.user + ct.system
            except psutil.Error:
                break
            time.sleep(0.1)
    except psutil.Error:
        pass
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{err.decode(errors='replace')[-2000:]}")
    train = _train_seconds(out, cwd / "run" / "stdout.log")
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return {"wall": wall, "cpu": cpu, "top_cpu": top_cpu, "train": train}


def measure_e2e(steps: int = 1000, rounds: int = 3, verbose: bool = False, threads: int = 1,
                order: str = "paired", malloc: str = "pinned", cpus: str = "pinned") -> float:
    """Median over rounds of (wall of ``segwatch run --headless`` / wall of ``python``)."""
    avail = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    if order == "paired" and len(avail) < 2 * threads:
        order = "alternate"       # two trainings at once need a core each
    halves = [set(avail[:threads]), set(avail[threads:2 * threads])] if cpus == "pinned" else None
    ratios: list[float] = []
    runs: dict[str, list[dict]] = {"plain": [], "segwatch": []}
    with tempfile.TemporaryDirectory(prefix="segwatch-e2e-") as tmp:
        folder = Path(tmp)
        script = _write_script(folder)
        cfg = _config(folder)
        run_dir = folder / "run"
        cmds = {
            "plain": [sys.executable, str(script), str(steps), str(threads)],
            "segwatch": [sys.executable, "-m", "segwatch", "run", "--headless", "--config", str(cfg),
                         "--run-dir", str(run_dir), str(script), "--", str(steps), str(threads)],
        }
        env = bytecode_env(folder)
        if malloc == "pinned":
            env.update(PINNED_MALLOC)
        for mode in cmds:   # untimed: fills the bytecode cache and the page cache
            shutil.rmtree(run_dir, ignore_errors=True)
            _timed([*cmds[mode][:-2], "20", str(threads)], folder, env)
        for r in range(rounds):
            this: dict[str, dict] = {}
            shutil.rmtree(run_dir, ignore_errors=True)
            if order == "paired":
                first = ("plain", "segwatch") if r % 2 == 0 else ("segwatch", "plain")
                # pinned: each command on its own core(s), swapped every round
                where = dict(zip(first, halves)) if halves else {}
                this = _reap_all({mode: _start(cmds[mode], folder, env, mode, where.get(mode)) for mode in first},
                                 run_dir)
                for mode in first:
                    runs[mode].append(this[mode])
            else:
                for mode in (("plain", "segwatch") if r % 2 == 0 else ("segwatch", "plain")):
                    shutil.rmtree(run_dir, ignore_errors=True)
                    this[mode] = _timed(cmds[mode], folder, env)
                    runs[mode].append(this[mode])
            ratios.append(this["segwatch"]["wall"] / this["plain"]["wall"])
            if verbose:
                print(f"  round {r + 1}: plain {this['plain']['wall']:.2f} s, segwatch {this['segwatch']['wall']:.2f} s,"
                      f" ratio {ratios[-1]:.3f}; training {this['plain']['train']:.2f} / {this['segwatch']['train']:.2f} s;"
                      f" CPU {this['plain']['cpu']:.2f} / {this['segwatch']['cpu']:.2f} s", flush=True)
    ratio = statistics.median(ratios)
    if verbose:
        def med(mode: str, key: str) -> float:
            vals = [x[key] for x in runs[mode] if x[key] is not None]
            return statistics.median(vals) if vals else float("nan")

        pw, sw = med("plain", "wall"), med("segwatch", "wall")
        pt, st = med("plain", "train"), med("segwatch", "train")
        print(f"  median wall:  plain {pw:.2f} s, segwatch {sw:.2f} s")
        print(f"  training (the script after its imports, timed by itself): plain {pt:.2f} s, "
              f"under the shim {st:.2f} s (ratio {st / pt:.3f})")
        print(f"  the rest (interpreter and torch import; shim import, supervisor start and end, report): "
              f"plain {pw - pt:.2f} s, segwatch {sw - st:.2f} s")
        pc, sc = med("plain", "cpu"), med("segwatch", "cpu")
        cpu_ratio = statistics.median(s_["cpu"] / p_["cpu"] for p_, s_ in zip(runs["plain"], runs["segwatch"]))
        top = [x["top_cpu"] for x in runs["segwatch"] if x["top_cpu"] is not None]
        print(f"  CPU seconds, whole process tree: plain {pc:.2f}, segwatch {sc:.2f} (median per-round ratio "
              f"{cpu_ratio:.3f})" + (f", of which the supervisor process {statistics.median(top):.2f}" if top else ""))
    return ratio


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads in the training (default 1)")
    ap.add_argument("--order", choices=("paired", "alternate"), default="paired",
                    help="paired: plain and segwatch at the same time, a core each (default); "
                         "alternate: one after the other")
    ap.add_argument("--cpus", choices=("pinned", "free"), default="pinned",
                    help="paired rounds, pinned: each command (segwatch: supervisor and training together) "
                         "on its own core, swapped every round (default); free: the scheduler decides")
    ap.add_argument("--malloc", choices=("pinned", "default"), default="pinned",
                    help="pinned: glibc's mmap/trim thresholds fixed for both commands (default)")
    a = ap.parse_args(argv)
    print(f"end to end: {a.steps} steps, {a.rounds} rounds (plain and segwatch {a.order}"
          f"{', CPUs ' + a.cpus if a.order == 'paired' else ''}), malloc {a.malloc}, "
          f"{a.threads} torch thread(s), {os.cpu_count()} CPUs", flush=True)
    ratio = measure_e2e(a.steps, a.rounds, verbose=True, threads=a.threads, order=a.order, malloc=a.malloc,
                        cpus=a.cpus)
    print(f"end-to-end ratio: {ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

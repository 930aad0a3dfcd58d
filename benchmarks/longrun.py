"""A long run through the CLI: run-directory size, supervisor memory, replay and attach times.

A tiny synthetic segmentation training (conv+BN+ReLU and a 1x1 head, batch 2x3x32x32,
6 classes, CPU, one torch thread) runs for ``--steps`` optimizer steps (default 200,000)
under ``segwatch run --headless`` at default settings, with an evaluation pass (4 batches,
the script prints its mIoU) every 5,000 steps. Measured:

- the run directory's size (per file) and its event count by type;
- the supervisor's peak RSS (psutil, sampled every 0.5 s; the top process of
  ``segwatch run --headless`` is the supervisor), and the training process's for scale;
- ``segwatch replay RUN_DIR --headless``: wall time of the whole command (it rebuilds the
  state from every stored event and prints the final status line and the findings);
- ``segwatch attach RUN_DIR --headless`` on the finished run, to its first frame: wall time
  until it prints its first status line. On a finished run that line comes once every
  stored event is read and ingested, so it is the time to a view of the current state;
- the same for the app: a ``SegwatchApp`` on a ``RunClient`` of the run in Textual's
  headless test harness, from construction until the reader has posted the whole stored
  history and the app has handled it (its end-of-stream refresh) (``--no-app`` skips it).

    python benchmarks/longrun.py [--steps 200000] [--keep DIR] [--reuse DIR] [--profile]

``--reuse DIR`` skips the training and measures an existing run directory; ``--profile``
prints where a replay spends its time (cProfile, in-process). Goal: replay < 10 s.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

TRAIN_SCRIPT = r'''
import sys, time
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

C = 6
STEPS = int(sys.argv[1])
EVAL_EVERY = 5000
torch.manual_seed(0)
torch.set_num_threads(1)

g = torch.Generator().manual_seed(0)
colour = torch.randn(C, 3, generator=g)


def data(n):
    """Blocky label maps (8x8-pixel regions, as objects are), images = each class's colour + noise."""
    lab = torch.randint(0, C, (n, 4, 4), generator=g).repeat_interleave(8, 1).repeat_interleave(8, 2)
    img = colour[lab].permute(0, 3, 1, 2) + 0.8 * torch.randn(n, 3, 32, 32, generator=g)
    return img, lab


imgs, labs = data(64)
val_imgs, val_labs = data(8)
train = DataLoader(TensorDataset(imgs, labs), batch_size=2, shuffle=True)
val = DataLoader(TensorDataset(val_imgs, val_labs), batch_size=2)
model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, C, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
crit = nn.CrossEntropyLoss()


def evaluate():
    model.eval()
    inter = torch.zeros(C)
    union = torch.zeros(C)
    with torch.no_grad():
        for x, y in val:
            p = model(x).argmax(1)
            for c in range(C):
                inter[c] += ((p == c) & (y == c)).sum()
                union[c] += ((p == c) | (y == c)).sum()
    model.train()
    keep = union > 0
    return float((inter[keep] / union[keep]).mean() * 100)


t0 = time.perf_counter()
step = 0
while step < STEPS:
    for x, y in train:
        loss = crit(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % EVAL_EVERY == 0 or step == STEPS:
            print(f"step {step} loss {loss.item():.4f} mIoU: {evaluate():.2f} "
                  f"({(time.perf_counter() - t0) / step * 1e3:.2f} ms/step)", flush=True)
        if step >= STEPS:
            break
'''


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)


def segwatch_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "segwatch", *args]


def train(run_dir: Path, steps: int, folder: Path) -> dict:
    """Run the training under ``segwatch run --headless``; sample the supervisor's RSS."""
    import psutil

    script = folder / "longrun_train.py"
    script.write_text(TRAIN_SCRIPT)
    cfg = folder / "longrun.yaml"
    cfg.write_text("dataset: {num_classes: 6, ignore_index: 255}\n")
    cmd = segwatch_cmd("run", "--headless", "--config", str(cfg), "--run-dir", str(run_dir), str(script),
                       "--", str(steps))
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err_tail: collections.deque = collections.deque(maxlen=40)
    reader = threading.Thread(target=lambda: err_tail.extend(proc.stderr), daemon=True)
    reader.start()
    sup = psutil.Process(proc.pid)
    peak_sup = peak_child = 0
    samples = []
    while proc.poll() is None:
        try:
            rss = sup.memory_info().rss
            peak_sup = max(peak_sup, rss)
            for ch in sup.children(recursive=True):
                try:
                    peak_child = max(peak_child, ch.memory_info().rss)
                except psutil.Error:
                    pass
            samples.append((time.perf_counter() - t0, rss))
        except psutil.Error:
            pass
        time.sleep(0.5)
    wall = time.perf_counter() - t0
    reader.join(timeout=5)
    if proc.returncode != 0:
        raise RuntimeError(f"segwatch run exited {proc.returncode}:\n" + b"".join(err_tail).decode(errors="replace"))
    # RSS a quarter, half and three quarters of the way, and at the end: does it keep growing?
    marks = [samples[min(len(samples) - 1, int(len(samples) * q))][1] for q in (0.25, 0.5, 0.75, 1.0)] if samples else []
    return {"wall": wall, "peak_sup": peak_sup, "peak_child": peak_child, "rss_marks": marks,
            "tail": b"".join(err_tail).decode(errors="replace")}


def dir_report(run_dir: Path) -> tuple[int, list[str]]:
    total = 0
    lines = []
    for p in sorted(run_dir.iterdir()):
        if p.is_file():
            size = p.stat().st_size
            total += size
            lines.append(f"    {p.name:24s} {human(size):>10s}")
    return total, lines


def event_counts(run_dir: Path) -> collections.Counter:
    counts: collections.Counter = collections.Counter()
    with open(run_dir / "events.jsonl", "rb") as fh:
        for line in fh:
            i = line.find(b'"type":')
            if i >= 0:
                j = line.find(b'"', i + 8)
                counts[line[i + 8:j].decode(errors="replace")] += 1
    return counts


def time_command(cmd: list[str], first_line: bytes | None = None, env: dict | None = None) -> tuple[float, float | None, float, str]:
    """Wall time of ``cmd`` to its exit; (``first_line``) to the first stderr/stdout line that
    contains ``first_line``; its CPU seconds (user + system: on a shared, loaded machine the
    wall time is mostly waiting for a core); its output."""
    import resource

    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    seen = None
    out = []
    for line in proc.stdout:
        out.append(line)
        if seen is None and first_line is not None and first_line in line:
            seen = time.perf_counter() - t0
    proc.wait()
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n" + b"".join(out[-20:]).decode(errors="replace"))
    cpu = ru1.ru_utime - ru0.ru_utime + ru1.ru_stime - ru0.ru_stime
    return wall, seen, cpu, b"".join(out).decode(errors="replace")


def app_first_frame(run_dir: Path) -> tuple[float, int]:
    """Seconds from constructing the app on a RunClient of ``run_dir`` to its first refresh
    after the stored history was read (Textual's headless harness); and the step it shows."""
    import asyncio

    from segwatch.supervisor import RunClient
    from segwatch.tui.app import SegwatchApp

    async def go() -> tuple[float, int]:
        t0 = time.perf_counter()
        client = RunClient(run_dir)
        app = SegwatchApp(client=client, live=True)
        async with app.run_test(size=(120, 40)) as pilot:
            while not app.view.stream_ended:
                await pilot.pause(0.02)
            await pilot.pause()   # the refresh that the end of the stream asked for
            dt = time.perf_counter() - t0
            step = int(getattr(app.state, "step", 0) or 0)
        client.close()
        return dt, step

    return asyncio.run(go())


def profile_replay(run_dir: Path) -> None:
    import cProfile
    import pstats

    from segwatch.supervisor.replay import Replayed

    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    Replayed(run_dir)
    prof.disable()
    print(f"  in-process Replayed(): {time.perf_counter() - t0:.2f} s (under cProfile)")
    pstats.Stats(prof).sort_stats("cumulative").print_stats(25)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=200_000)
    ap.add_argument("--keep", metavar="DIR", help="keep the run directory at DIR (default: a temp dir, removed)")
    ap.add_argument("--reuse", metavar="DIR", help="measure an existing run directory (no training)")
    ap.add_argument("--profile", action="store_true", help="profile an in-process replay")
    ap.add_argument("--no-app", action="store_true", help="skip the app's first-frame measurement")
    a = ap.parse_args(argv)

    tmp = tempfile.mkdtemp(prefix="segwatch-longrun-")
    try:
        folder = Path(tmp)
        if a.reuse:
            run_dir = Path(a.reuse).absolute()
            print(f"longrun: measuring {run_dir} (no training)", flush=True)
        else:
            run_dir = Path(a.keep).absolute() if a.keep else folder / "run"
            if run_dir.exists():
                shutil.rmtree(run_dir)
            print(f"longrun: {a.steps:,} steps through `segwatch run --headless`, python {sys.version.split()[0]}, "
                  f"{os.cpu_count()} CPUs", flush=True)
            r = train(run_dir, a.steps, folder)
            print(f"  training wall {r['wall']:.0f} s ({r['wall'] / a.steps * 1e3:.2f} ms/step under segwatch)")
            print(f"  supervisor peak RSS {human(r['peak_sup'])} (at 1/4, 1/2, 3/4, end: "
                  + ", ".join(human(x) for x in r["rss_marks"]) + f"); training process peak {human(r['peak_child'])}")
        meta = json.loads((run_dir / "meta.json").read_text())
        total, lines = dir_report(run_dir)
        counts = event_counts(run_dir)
        print(f"  run directory {human(total)}; events.jsonl holds {sum(counts.values()):,} events:")
        print("    " + ", ".join(f"{k} {v:,}" for k, v in counts.most_common()))
        print("\n".join(lines))
        print(f"  status {meta.get('status')}, exit code {meta.get('exit_code')}")

        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from _e2e import bytecode_env

        env = bytecode_env(folder)   # bytecode cached, as for an installed segwatch
        replay_wall, _, replay_cpu, out = time_command(segwatch_cmd("replay", str(run_dir), "--headless"), env=env)
        status = next((ln for ln in out.splitlines() if " step " in ln and " | " in ln), "")
        print(f"  segwatch replay --headless: {replay_wall:.2f} s wall, {replay_cpu:.2f} s CPU  ({status.strip()[:110]})")
        final_step = (json.loads((run_dir / "report.json").read_text()).get("steps")
                      if (run_dir / "report.json").exists() else None)
        attach_wall, first, attach_cpu, out = time_command(segwatch_cmd("attach", str(run_dir), "--headless", "--interval", "3600"),
                                               first_line=f"step {final_step} ".encode() if final_step else b"step ",
                                                     env=env)
        print(f"  segwatch attach --headless: first status line after {first if first is not None else float('nan'):.2f} s"
              f" (exit {attach_wall:.2f} s wall, {attach_cpu:.2f} s CPU)")
        if not a.no_app:
            try:
                dt, step = app_first_frame(run_dir)
                print(f"  app (attach, Textual headless harness): first frame with the whole history "
                      f"after {dt:.2f} s (step {step:,})")
            except Exception as exc:  # the app is someone else's moving target: say it, do not fail
                print(f"  app first frame: not measured ({type(exc).__name__}: {exc})")
        if a.profile:
            profile_replay(run_dir)
        print(f"SUMMARY longrun: {sum(counts.values()):,} events, run dir {human(total)}, replay {replay_wall:.2f} s "
              f"({replay_cpu:.2f} s CPU) "
              f"(goal < 10 s: {'ok' if replay_wall < 10 else 'MISSED'}), attach first line "
              f"{first if first is not None else float('nan'):.2f} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""End-to-end overhead on a heavy model: the Pytorch-UNet-style training of
``tests/realistic/unet_style/train.py`` (the classic ~31M-parameter UNet in channels_last,
RMSprop, CE + Dice, validation five times per epoch, 10 steps per epoch on 16x16 images)
under ``segwatch run --headless`` against ``python train.py``, launch to exit.

Plain and segwatch runs alternate, the order swapped each round, after one untimed run of
each (bytecode and page caches, as ``_e2e.py``); the ratio is the median over rounds of
(segwatch wall / plain wall of the same round).  CPU seconds of the whole process tree are
printed too (on a shared machine the CPU ratio is the steadier one).

    python benchmarks/e2e_unet.py [--epochs 2] [--rounds 3]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _e2e import _timed, bytecode_env  # noqa: E402

SCRIPT = Path(__file__).resolve().parent.parent / "tests" / "realistic" / "unet_style" / "train.py"


def measure(epochs: int = 2, rounds: int = 3) -> dict:
    runs: dict[str, list[dict]] = {"plain": [], "segwatch": []}
    ratios, cpu_ratios = [], []
    with tempfile.TemporaryDirectory(prefix="segwatch-e2e-unet-") as tmp:
        folder = Path(tmp)
        run_dir = folder / "run"
        args = ["--epochs", str(epochs)]
        cmds = {"plain": [sys.executable, str(SCRIPT), *args],
                "segwatch": [sys.executable, "-m", "segwatch", "run", "--headless", "--run-dir", str(run_dir),
                             str(SCRIPT), "--", *args]}
        env = bytecode_env(folder)
        for mode in cmds:  # untimed
            shutil.rmtree(run_dir, ignore_errors=True)
            _timed(cmds[mode], folder, env)
        for r in range(rounds):
            this = {}
            for mode in (("plain", "segwatch") if r % 2 == 0 else ("segwatch", "plain")):
                shutil.rmtree(run_dir, ignore_errors=True)
                this[mode] = _timed(cmds[mode], folder, env)
                runs[mode].append(this[mode])
            ratios.append(this["segwatch"]["wall"] / this["plain"]["wall"])
            cpu_ratios.append(this["segwatch"]["cpu"] / this["plain"]["cpu"])
            print(f"  round {r + 1}: plain {this['plain']['wall']:.2f} s ({this['plain']['cpu']:.2f} CPU s), "
                  f"segwatch {this['segwatch']['wall']:.2f} s ({this['segwatch']['cpu']:.2f} CPU s), "
                  f"wall ratio {ratios[-1]:.3f}, CPU ratio {cpu_ratios[-1]:.3f}", flush=True)
    return {"wall_ratio": statistics.median(ratios), "cpu_ratio": statistics.median(cpu_ratios),
            "plain_wall": statistics.median(x["wall"] for x in runs["plain"]),
            "segwatch_wall": statistics.median(x["wall"] for x in runs["segwatch"])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args(argv)
    print(f"end to end, Pytorch-UNet-style (31M parameters): {a.epochs} epoch(s) of 10 steps, {a.rounds} rounds "
          f"(plain and segwatch alternating), {os.cpu_count()} CPUs", flush=True)
    res = measure(a.epochs, a.rounds)
    print(f"  median wall: plain {res['plain_wall']:.2f} s, segwatch {res['segwatch_wall']:.2f} s")
    print(f"end-to-end ratio (UNet): wall {res['wall_ratio']:.3f}, CPU {res['cpu_ratio']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

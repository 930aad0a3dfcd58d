"""Time segwatch's ConfusionMatrix.update against torchmetrics, side by side, on CPU.

Workload: float logits [16, 37, 480, 480] (SUNRGBD's 37 classes) and int64 labels with
about 10% of the pixels set to the ignore value -1.  Both implementations get the same
tensors; runs alternate (ours, theirs, ours, ...) so that noise from other processes on
the machine hits both alike.  Reports the median of the timed repeats after warm-up.

    python benchmarks/confusion.py [--repeats 7] [--threads 1]

The last line is ``ratio vs torchmetrics: X`` (torchmetrics time / ours; > 1 is faster).
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import torch

from segwatch.core.metrics import ConfusionMatrix


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--classes", type=int, default=37)
    ap.add_argument("--size", type=int, default=480)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads for both (default 1: the machine is shared)")
    args = ap.parse_args()

    from torchmetrics import __version__ as tm_version
    from torchmetrics.classification import MulticlassConfusionMatrix

    torch.set_num_threads(args.threads)
    B, C, S = args.batch, args.classes, args.size
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(B, C, S, S, generator=g)
    labels = torch.randint(0, C, (B, S, S), generator=g)
    labels[torch.rand(B, S, S, generator=g) < 0.10] = -1
    pixels = B * S * S

    ours = ConfusionMatrix(C, ignore_index=-1)
    theirs = MulticlassConfusionMatrix(num_classes=C, ignore_index=-1)

    def run_ours() -> None:
        ours.update(logits, labels)

    def run_theirs() -> None:
        theirs.update(logits, labels)

    for _ in range(args.warmup):
        run_ours()
        run_theirs()
    t_ours: list[float] = []
    t_theirs: list[float] = []
    for _ in range(args.repeats):
        for fn, acc in ((run_ours, t_ours), (run_theirs, t_theirs)):
            t0 = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t0)

    # same answer, or the timing means nothing
    if not np.array_equal(ours.matrix, theirs.compute().numpy()):
        raise SystemExit("matrices differ between segwatch and torchmetrics")

    med_o = statistics.median(t_ours)
    med_t = statistics.median(t_theirs)
    print(f"workload: logits {B}x{C}x{S}x{S} float32, ~10% labels = -1, CPU, "
          f"{args.threads} thread(s), {args.repeats} repeats after {args.warmup} warm-up")
    print(f"torch {torch.__version__}, torchmetrics {tm_version}, "
          f"python {platform.python_version()}, {platform.machine()}")
    print(f"segwatch ConfusionMatrix.update:        median {med_o * 1000:8.1f} ms  "
          f"{pixels / med_o / 1e6:8.1f} Mpix/s")
    print(f"torchmetrics MulticlassConfusionMatrix: median {med_t * 1000:8.1f} ms  "
          f"{pixels / med_t / 1e6:8.1f} Mpix/s")
    print(f"ratio vs torchmetrics: {med_t / med_o:.2f}")


if __name__ == "__main__":
    main()

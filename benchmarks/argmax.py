"""Time the shim's ``class_argmax`` against ``Tensor.max(1).indices``, side by side, on CPU.

The evaluation confusion matrix needs every pixel's predicted class; on CPU, PyTorch's index
reduction over the class dim was most of that cost. For each logits shape (the e2e bench's
val batch, SUNRGBD, Cityscapes and ADE20K-like batches) both functions get the same tensor,
alternating, and the median of the timed repeats is printed with the ratio. The outputs are
compared too: they must be equal.

    python benchmarks/argmax.py [--repeats 15] [--threads 1]

The last line is ``speed-up of class_argmax over max(1).indices: X (geometric mean)``.
"""
from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from segwatch.shim.stats import class_argmax

SHAPES = {
    "e2e bench val batch": (4, 37, 96, 96),
    "SUNRGBD 37 classes": (2, 37, 480, 640),
    "Cityscapes 19 classes": (2, 19, 512, 1024),
    "ADE20K 150 classes": (2, 150, 256, 256),
}


def _time(fn, x) -> float:
    t0 = time.perf_counter()
    fn(x)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {a.threads} thread(s), median of {a.repeats} alternating repeats")
    print(f"  {'logits':34s} {'max(1).indices':>15s} {'class_argmax':>13s} {'speed-up':>9s}")
    ups = []
    for name, shape in SHAPES.items():
        x = torch.randn(shape)
        assert torch.equal(class_argmax(x), x.max(1).indices), name
        ref, ours = [], []
        for _ in range(a.repeats):
            ref.append(_time(lambda t: t.max(1).indices, x))
            ours.append(_time(class_argmax, x))
        r, o = statistics.median(ref), statistics.median(ours)
        ups.append(r / o)
        print(f"  {name + ' ' + 'x'.join(map(str, shape)):34s} {r * 1e3:12.2f} ms {o * 1e3:10.2f} ms {r / o:8.2f}x")
    print(f"speed-up of class_argmax over max(1).indices: {math.exp(sum(map(math.log, ups)) / len(ups)):.2f} (geometric mean)")


if __name__ == "__main__":
    main()

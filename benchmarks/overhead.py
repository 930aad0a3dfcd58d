"""Overhead of the shim on a tiny CPU segmentation training.

The same training runs in one process, in interleaved blocks: plain (no hooks), under the
shim at default settings, and under the shim in debug mode (every probe every step). The
shim is installed and uninstalled in-process between blocks (``Shim.install()`` /
``Shim.uninstall(finish=False)``, a null emitter), so machine noise hits all three alike.
Each shim mode keeps its own ``Shim`` across its blocks (its sampler state carries over, as
in one long run) and is warmed up before measuring. Reported: median step time per mode.

    python benchmarks/overhead.py [--rounds 8] [--steps 30]

Last line: ``overhead ratio default: X, debug: Y`` (ratios of median step times to plain).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from segwatch.shim import NullEmitter, Shim

C = 37


class TinySeg(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc1 = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU())
        self.enc2 = nn.Sequential(nn.Conv2d(16, 32, 3, 2, 1), nn.BatchNorm2d(32), nn.ReLU())
        self.head = nn.Conv2d(32, C, 1)

    def forward(self, x):
        y = self.head(self.enc2(self.enc1(x)))
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


def make_loader(n: int = 64) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    imgs = torch.randn(n, 3, 96, 96, generator=g)
    labs = torch.randint(0, C, (n, 96, 96), generator=g)
    return DataLoader(TensorDataset(imgs, labs), batch_size=4, shuffle=False)


def run_block(model, opt, loader, steps: int, times: list[float]) -> None:
    crit = nn.CrossEntropyLoss(ignore_index=255)
    it = iter(loader)
    for _ in range(steps):
        t0 = time.perf_counter()
        try:
            img, lab = next(it)
        except StopIteration:
            it = iter(loader)
            img, lab = next(it)
        out = model(img)
        loss = crit(out, lab)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=40)
    a = ap.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(2)
    model = TinySeg()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loader = make_loader()
    config = {"dataset": {"num_classes": C, "ignore_index": 255}, "sampling": {"overhead_budget": 0.01}}
    shims = {"default": Shim(NullEmitter(), config, debug=False, script=__file__),
             "debug": Shim(NullEmitter(), config, debug=True, script=__file__)}
    times: dict[str, list[float]] = {"plain": [], "default": [], "debug": []}

    # warm-up: torch kernels, then each shim past its dense start
    run_block(model, opt, loader, 10, [])
    for name, s in shims.items():
        s.install()
        run_block(model, opt, loader, a.warmup, [])
        s.uninstall(finish=False)

    ratios: dict[str, list[float]] = {"default": [], "debug": []}
    for r in range(a.rounds):
        order = ["plain", "default", "debug"]
        order = order[r % 3:] + order[:r % 3]          # rotate who goes first
        block: dict[str, list[float]] = {}
        for name in order:
            s = shims.get(name)
            if s is not None:
                s.install()
            block[name] = []
            run_block(model, opt, loader, a.steps, block[name])
            if s is not None:
                s.uninstall(finish=False)
            times[name] += block[name]
        base = statistics.median(block["plain"])
        for k in ratios:
            ratios[k].append(statistics.median(block[k]) / base)

    med = {k: statistics.median(v) for k, v in times.items()}
    d = shims["default"]
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch 4x3x96x96, {C} classes, "
          f"{a.rounds} rounds x {a.steps} steps per mode (interleaved, order rotated)")
    for k in ("plain", "default", "debug"):
        print(f"  {k:8s} median step {med[k] * 1e3:8.3f} ms")
    share = d.sampler.share_total()
    print(f"  default: shim's own measured share {share:.4f} (budget {d.sampler.budget}), "
          f"intervals {d.sampler.intervals()}")
    print("  ratio = median over rounds of (median step of the mode / median plain step of the same round)")
    for k in ("default", "debug"):
        q = statistics.quantiles(ratios[k], n=4)
        print(f"  {k:8s} per-round ratio quartiles {q[0]:.3f} / {q[1]:.3f} / {q[2]:.3f}")
    print(f"overhead ratio default: {statistics.median(ratios['default']):.3f}, "
          f"debug: {statistics.median(ratios['debug']):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Cost of the cross-node pause agreement (segwatch/shim/pause.py), side by side in one run.

    python -m torch.distributed.run --nproc_per_node 2 benchmarks/pause_agreement.py

Each rank (gloo, CPU) times, alternating in the same loop: a tiny DDP training step, the
agreement's all-reduce of one int32 (``_Agreement.issue`` + ``read``), and pause.py's step
hook between agreements. Prints medians and the per-step share at K = 8, 16, 32.
"""
import os
import statistics
import time

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F


def main():
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    from segwatch.shim.pause import NEVER, CoopPause, _Agreement

    model = nn.parallel.DistributedDataParallel(
        nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1)))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.rand(4, 3, 16, 16), torch.randint(0, 4, (4, 16, 16))
    ag = _Agreement(dist, "cpu")

    class Hooked(CoopPause):
        pass
    h = Hooked()
    h._pause_steps, h._pause_next = 0, NEVER      # between agreements: increment + compare
    step_t, agree_t, hook_t = [], [], []
    for i in range(400):
        t0 = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        t1 = time.perf_counter()
        ag.issue(0)
        ag.read()
        t2 = time.perf_counter()
        h._pause_hook(opt, (), {})
        t3 = time.perf_counter()
        if i >= 50:
            step_t.append(t1 - t0)
            agree_t.append(t2 - t1)
            hook_t.append(t3 - t2)
    s, a, k = (statistics.median(v) * 1e6 for v in (step_t, agree_t, hook_t))
    if dist.get_rank() == 0:
        print(f"tiny DDP step {s:.0f} us; agreement all-reduce {a:.0f} us ({a / s:.3f} of a step); "
              f"hook between agreements {k:.2f} us ({k / s:.5f} of a step)")
        for K in (8, 16, 32):
            print(f"  K={K}: agreement per step {a / K:.1f} us = {a / K / s:.4f} of a step")
    dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()

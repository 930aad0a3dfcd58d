"""The sampler keeps the shim's own measured share of step time within the budget.

The training's steps are cheap (~10-20 ms on one CPU thread) next to a full set of probes (label and input
statistics, prediction histogram, gradient norms, update ratio, read-back): sampling every
step (debug mode, a fixed schedule) costs far more than the budget. At default settings the
adaptive schedule must stay within it once the warm-up is over. Asserted on the shim's own
accounting (``Sampler.share_steady``: shim time / wall step time), not on wall time.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from segwatch.shim import MemoryEmitter, Shim
from segwatch.shim.sampler import Sampler

C = 21


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 32, 3, padding=1)
        self.bn = nn.BatchNorm2d(32)
        self.m = nn.Conv2d(32, 32, 3, padding=1)
        self.b = nn.Conv2d(32, C, 1)

    def forward(self, x):
        return self.b(F.relu(self.m(F.relu(self.bn(self.a(x))))))


def _train(shim: Shim, steps: int) -> None:
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(0)
    ds = TensorDataset(torch.randn(32, 3, 64, 64, generator=g), torch.randint(0, C, (32, 64, 64), generator=g))
    dl = DataLoader(ds, batch_size=4)
    crit = nn.CrossEntropyLoss()
    shim.install()
    try:
        n = 0
        while n < steps:
            for x, y in dl:
                loss = crit(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                n += 1
                if n >= steps:
                    break
    finally:
        shim.uninstall(finish=True)


@pytest.mark.slow
def test_adaptive_schedule_stays_within_budget():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        budget = 0.02
        cfg = {"dataset": {"num_classes": C, "ignore_index": 255}, "sampling": {"overhead_budget": budget}}
        fixed = Shim(MemoryEmitter(), cfg, debug=True, script=__file__)
        _train(fixed, 60)
        adaptive = Shim(MemoryEmitter(), cfg, debug=False, script=__file__)
        _train(adaptive, 300)
    finally:
        torch.set_num_threads(prev)
    fixed_share = fixed.sampler.share_steady()
    share = adaptive.sampler.share_steady()
    assert fixed_share is not None and share is not None
    # a fixed every-step schedule blows the budget on these cheap steps ...
    assert fixed_share > 2 * budget, fixed_share
    # ... the adaptive one keeps the shim's measured share within it, or, where even the
    # coverage floor (every probe every 32 steps) costs more, holds the floor and says so
    sm = adaptive.sampler
    iv = sm.intervals()
    at_floor = all(iv[p] == sm.cap(p) for p in iv)
    assert share <= budget or (sm.over_budget and at_floor), (share, iv, sm.cost, sm.over_budget)
    assert max(iv.values()) <= 32
    assert max(iv.values()) > 1          # it had to widen some intervals
    ov = adaptive.emitter.of_type("overhead")
    assert ov and ov[-1]["budget"] == budget and "intervals" in ov[-1]
    # events still flow: steps were read back after the warm-up
    steps = [e["step"] for e in adaptive.emitter.of_type("step")]
    assert max(steps) == 300 and any(s > 20 for s in steps[:-1])


def test_intervals_shrink_again_when_steps_get_slower():
    s = Sampler(budget=0.01, warmup=0, window=5)
    for p in ("batch", "preds", "grads", "update", "readback"):
        s.cost[p] = 1e-3
    s._adapt(step_time=0.01, base=0.0)            # 10 ms steps: 1 ms probes must be rare
    fast = dict(s.interval)
    s._adapt(step_time=2.0, base=0.0)             # 2 s steps: every step fits
    slow = dict(s.interval)
    assert all(fast[p] > slow[p] for p in fast if p != "readback")
    assert slow["batch"] == 1 and slow["grads"] == 1


def test_debug_samples_everything():
    s = Sampler(budget=0.01, debug=True)
    assert all(s.due(p, 10 ** 6) for p in ("batch", "preds", "grads", "update"))
    assert s.readback_due(10 ** 6)

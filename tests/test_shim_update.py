"""The update probe on a subsample: ||dw|| / ||w|| close to the exact value, and parameters that
get gradients but never move are counted (``never_stepped``), with no false count on a
healthy training. The model has tensors larger than the probe's subsample (``SUB``)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from segwatch.shim import MemoryEmitter, Shim
from segwatch.shim.probes.update import SUB

C = 5


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 64, 3, padding=1)          # 1728 weights > SUB
        self.b = nn.Conv2d(64, 64, 3, padding=1)         # 36864 weights
        self.c = nn.Conv2d(64, C, 1)

    def forward(self, x):
        return self.c(F.relu(self.b(F.relu(self.a(x)))))


def _train(lr: float, steps: int = 12):
    torch.manual_seed(0)
    model = Net()
    assert max(p.numel() for p in model.parameters()) > 30 * SUB
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    g = torch.Generator().manual_seed(0)
    dl = DataLoader(TensorDataset(torch.randn(16, 3, 16, 16, generator=g),
                                  torch.randint(0, C, (16, 16, 16), generator=g)), batch_size=2)
    shim = Shim(MemoryEmitter(), {"dataset": {"num_classes": C}}, debug=True, script=__file__)
    exact: dict[int, float] = {}
    shim.install()
    try:
        n = 0
        while n < steps:
            for x, y in dl:
                loss = F.cross_entropy(model(x), y)
                opt.zero_grad()
                loss.backward()
                before = [p.detach().clone() for p in model.parameters()]
                opt.step()
                n += 1
                with torch.no_grad():
                    dw = torch.stack([(p - b).norm() for p, b in zip(model.parameters(), before)]).norm()
                    w = torch.stack([p.norm() for p in model.parameters()]).norm()
                exact[n] = float(dw / w)
                if n >= steps:
                    break
    finally:
        shim.uninstall(finish=True)
    return shim, exact


def test_update_ratio_estimate_and_no_false_never_stepped():
    shim, exact = _train(lr=0.05)
    steps = [e for e in shim.emitter.of_type("step") if e.get("update_ratio") is not None]
    assert len(steps) >= 10
    for e in steps:
        ref = exact[e["step"]]
        assert abs(e["update_ratio"] - ref) <= 0.25 * ref, (e["step"], e["update_ratio"], ref)
    ns = [e["never_stepped"] for e in shim.emitter.of_type("step") if e.get("never_stepped") is not None]
    assert ns and all(v == 0 for v in ns)


def test_parameters_that_never_move_are_counted():
    shim, _ = _train(lr=0.0)      # (weight decay moves nothing at lr 0 either)
    ns = [e["never_stepped"] for e in shim.emitter.of_type("step") if e.get("never_stepped") is not None]
    assert ns and ns[-1] == 6     # 3 weights + 3 biases, all with gradients, none moved
    assert all(e["update_ratio"] == 0.0 for e in shim.emitter.of_type("step") if e.get("update_ratio") is not None)

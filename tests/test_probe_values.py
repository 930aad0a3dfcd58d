"""The cheaper probes compute what a plain reference computation gives (random inputs, real
tiny trainings in-process; no mocks)."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from segwatch import shim as S
from segwatch.shim import stats as ST
from segwatch.shim.emitter import MemoryEmitter
from segwatch.shim.probes.preds import PRED_VALUES

C = 7


pytestmark = pytest.mark.usefixtures("torch_one_thread_shim_uninstalled")


def _align_reference(img: torch.Tensor, lab: torch.Tensor, target: int = 64) -> torch.Tensor:
    """The edge-agreement sums written plainly, on the grid's interior: forward-difference
    gradients, an unpadded 3x3 max pool, label boundaries as a right / lower neighbour that
    differs, for the label and its mirror."""
    x = torch.nan_to_num(img[0].float().sum(0, keepdim=True)[None], nan=0.0, posinf=0.0, neginf=0.0)
    s = max(1, x.shape[-1] // target)
    if s > 1:
        x = F.avg_pool2d(x, s, s)
    x = x[0, 0]
    h, w = x.shape
    g = (x[:-1, 1:] - x[:-1, :-1]).abs() + (x[1:, :-1] - x[:-1, :-1]).abs()
    g = F.max_pool2d(g[None, None], 3, 1, 0)[0, 0]
    lab1 = ST.squeeze_label(lab)[0]
    if lab1.is_floating_point():
        lab1 = torch.nan_to_num(lab1, nan=-1.0).round()
    lab1 = F.interpolate(lab1.float()[None, None], size=(h, w), mode="nearest")[0, 0]
    out = []
    for l in (lab1, lab1.flip(-1)):
        e = (l[:-1, 1:] != l[:-1, :-1]) | (l[1:, :-1] != l[:-1, :-1])
        e = e[1:-1, 1:-1]
        out += [g[e].sum(), e.sum().float(), g.sum(), torch.tensor(float(g.numel()))]
    return torch.stack(out)


@pytest.mark.parametrize("shape", [(4, 3, 96, 96), (2, 3, 64, 64), (1, 4, 200, 130), (2, 3, 5, 7)])
def test_align_sums_equal_reference(shape):
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(*shape, generator=g)
    x[0, 0, 0, 0] = float("nan")
    labs = [torch.randint(0, 5, (shape[0],) + shape[2:], generator=g),
            torch.randint(0, 5, (shape[0], 1) + shape[2:], generator=g).float(),
            (torch.arange(shape[3]) // 3).expand(shape[0], shape[2], shape[3]).contiguous()]
    labs[1][0, 0, 0, 1] = float("nan")
    for lab in labs:
        got = ST.align_sums(x, lab)
        ref = _align_reference(x, lab)
        assert got.shape == (8,)
        assert torch.allclose(got, ref, rtol=1e-5, atol=1e-3), (got, ref)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.cls = nn.Conv2d(8, C, 1)

    def forward(self, x):
        return self.cls(F.relu(self.conv(x)))


def _run(size: int, steps: int, debug: bool = True):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    dl = DataLoader(TensorDataset(torch.randn(16, 3, size, size, generator=g),
                                  torch.randint(0, C, (16, size, size), generator=g)), batch_size=4)
    em = MemoryEmitter()
    S.install(config={"dataset": {"num_classes": C, "ignore_index": 255}}, emitter=em, debug=debug,
              script=__file__)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    logits_seen, losses = [], {}
    h = model.register_forward_hook(lambda m, a, out: logits_seen.append((out.detach().clone(), a)))
    n = 0
    while n < steps:
        for x, y in dl:
            out = model(x)
            loss = F.cross_entropy(out, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            n += 1
            losses[n] = (loss.detach().float().item(), y)
            if n >= steps:
                break
    h.remove()
    S.uninstall()
    return em.items, logits_seen, losses


def test_training_pred_histogram_is_argmax_of_the_reported_stride():
    # 4 x 7 x 128 x 128 logits = 458,752 values: above PRED_VALUES, so strided
    events, logits_seen, losses = _run(128, 6)
    preds = [e for e in events if e["type"] == "preds" and e.get("phase") == "train"]
    assert len(preds) >= 5
    for e in preds:
        logits = logits_seen[e["step"]][0]
        st = e["stride"]
        assert st == ST.subsample_stride(logits.shape, PRED_VALUES) and st > 1
        sub = logits[..., ::st, ::st]
        assert sub.numel() <= PRED_VALUES
        pred = sub.argmax(1)
        assert e["hist"] == torch.bincount(pred.reshape(-1), minlength=C).tolist()
        y = losses[e["step"] + 1][1][..., ::st, ::st]
        assert e["gt_hist"] == torch.bincount(y.reshape(-1), minlength=C).tolist()
        assert e["correct"] == int((pred == y).sum())
        assert e["valid"] == y.numel()


@pytest.mark.parametrize("debug", [True, False])
def test_cpu_losses_in_step_events_equal_the_scripts(debug):
    events, _, losses = _run(16, 40, debug=debug)
    steps = [e for e in events if e["type"] == "step" and e.get("loss") is not None]
    assert len(steps) >= (40 if debug else 4)
    for e in steps:
        assert e["loss"] == losses[e["step"]][0]
    # sampled step records carry the LR the update used; unsampled steps read none
    sampled = [e for e in steps if e.get("sampled")]
    assert sampled and all(e["lr_applied"] == [0.05] for e in sampled)

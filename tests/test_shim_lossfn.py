"""The shim's loss watch (``lossfn`` events) on tiny in-process trainings: real torch losses,
module and functional form, class weights, auxiliary heads, and a target the loss rejects."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from segwatch import shim as S
from segwatch.protocol import encode
from segwatch.shim.emitter import MemoryEmitter
from segwatch.shim.lossfn import PERIOD

C = 5


pytestmark = pytest.mark.usefixtures("torch_one_thread_shim_uninstalled")


class Net(nn.Module):
    def __init__(self, aux=False):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.cls = nn.Conv2d(8, C, 1)
        self.aux = nn.Conv2d(8, C, 1) if aux else None

    def forward(self, x):
        h = F.relu(self.conv(x))
        if self.aux is None:
            return self.cls(h)
        return {"out": self.cls(h), "aux": self.aux(h)}


def _loader(n=32, size=16, ignore=None):
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, C, (n, size, size), generator=g)
    if ignore is not None:
        y[:, :2] = ignore
    return DataLoader(TensorDataset(torch.randn(n, 3, size, size, generator=g), y), batch_size=4)


def _train(model, loss_of, loader, epochs=1):
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(epochs):
        for x, y in loader:
            loss = loss_of(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()


def _lossfn_events(em):
    evs = [e for e in em.items if e["type"] == "lossfn"]
    for e in evs:
        encode(e)       # valid on the wire
    return evs


def test_weighted_module_loss_is_named_with_its_weights_once():
    em = MemoryEmitter()
    S.install(emitter=em, hello=False)
    w = torch.ones(C)
    w[3] = 100.0
    crit = nn.CrossEntropyLoss(weight=w, ignore_index=255)
    _train(Net(), lambda out, y: crit(out, y), _loader(ignore=255), epochs=2)
    S.uninstall()
    evs = _lossfn_events(em)
    assert 1 <= len(evs) <= 3, [e["calls_per_step"] for e in evs]
    call = evs[-1]["calls"][0]
    assert call["fn"] == "nn.CrossEntropyLoss" and call["ignore_index"] == 255
    assert call["reduction"] == "mean" and call["label_smoothing"] == 0.0
    assert call["weight"]["argmax"] == 3 and call["weight"]["ratio"] == pytest.approx(100.0)
    assert call["weight"]["values"] == [1.0, 1.0, 1.0, 100.0, 1.0]
    assert call["target_oor"] == []          # 255 is the loss's ignore_index
    assert evs[-1]["calls_per_step"] == 1
    assert evs[-1]["output"]["kind"] == "tensor"


def test_aux_head_dict_output_and_functional_calls_counted_per_step():
    em = MemoryEmitter()
    S.install(emitter=em, hello=False)

    def loss_of(out, y):
        return F.cross_entropy(out["out"], y, ignore_index=255) + 0.4 * F.cross_entropy(out["aux"], y, ignore_index=255)

    _train(Net(aux=True), loss_of, _loader(ignore=255))
    S.uninstall()
    evs = _lossfn_events(em)
    last = evs[-1]
    assert last["calls_per_step"] == 2
    assert [c["fn"] for c in last["calls"]] == ["F.cross_entropy", "F.cross_entropy"]
    assert all(c["ignore_index"] == 255 and c["weight"] is None for c in last["calls"])
    assert last["output"] == {"kind": "dict", "keys": ["out", "aux"]}


def test_target_values_the_loss_rejects_are_reported_before_the_call_raises():
    em = MemoryEmitter()
    S.install(emitter=em, hello=False)
    crit = nn.CrossEntropyLoss()            # ignore_index -100, labels use 255
    with pytest.raises((IndexError, RuntimeError)):
        _train(Net(), lambda out, y: crit(out, y), _loader(ignore=255))
    S.uninstall()
    evs = _lossfn_events(em)
    assert evs and evs[0]["calls"][0]["ignore_index"] == -100
    assert evs[0]["calls"][0]["target_oor"] == [255]


def test_observation_stops_after_the_configuration_is_stable():
    em = MemoryEmitter()
    shim = S.install(emitter=em, hello=False)
    calls = []
    crit = nn.CrossEntropyLoss()
    orig = shim._lf_describe

    def counting(*a, **k):
        calls.append(shim.step)
        return orig(*a, **k)

    shim._lf_describe = counting
    _train(Net(), lambda out, y: crit(out, y), _loader(n=4 * 40), epochs=1)   # 40 steps
    S.uninstall()
    # the first few steps, then nothing until step PERIOD
    assert 3 <= len(calls) <= 5 and max(calls) < 5, calls
    assert PERIOD > 40
    assert len(_lossfn_events(em)) <= 2


def test_a_loss_watch_error_disables_the_probe_and_training_goes_on():
    em = MemoryEmitter()
    S.install(emitter=em, hello=False, fault="lossfn")
    crit = nn.CrossEntropyLoss()
    _train(Net(), lambda out, y: crit(out, y), _loader())
    S.uninstall()
    probes = [e for e in em.items if e["type"] == "probe" and e.get("name") == "lossfn"]
    assert probes and probes[0]["status"] == "disabled"
    assert not _lossfn_events(em)


@pytest.mark.slow
def test_compiled_loss_passes_straight_through_without_recompiling():
    pytest.importorskip("torch._dynamo")
    from torch._dynamo.testing import CompileCounter

    em = MemoryEmitter()
    shim = S.install(emitter=em, hello=False)
    shim._stop_discovery()
    cnt = CompileCounter()
    crit = nn.CrossEntropyLoss()

    @torch.compile(backend=cnt)
    def loss_fn(x, y):
        return crit(x, y) + F.cross_entropy(x, y)

    x, y = torch.randn(2, C, 4, 4), torch.randint(0, C, (2, 4, 4))
    for s in range(6):
        shim.step = s          # the counter the eager wrappers read
        ref = nn.functional.cross_entropy(x, y).item() * 2
        assert loss_fn(x, y).item() == pytest.approx(ref, rel=1e-5)
    assert cnt.frame_count == 1


def test_many_loss_calls_without_backward_are_observed_a_bounded_number_of_times():
    from segwatch.shim.lossfn import MAX_CALLS

    em = MemoryEmitter()
    shim = S.install(emitter=em, hello=False)
    seen = []
    orig = shim._lf_describe
    shim._lf_describe = lambda *a, **k: (seen.append(1), orig(*a, **k))[1]
    crit = nn.CrossEntropyLoss()
    x, y = torch.randn(2, C, 4, 4, requires_grad=True), torch.randint(0, C, (2, 4, 4))
    for _ in range(200):            # e.g. a loss evaluated over a dataset before training
        crit(x, y)
    assert len(seen) == MAX_CALLS
    crit(x, y).backward()           # a training step: observed again
    crit(x, y)
    assert len(seen) == MAX_CALLS + 1
    S.uninstall()


def test_evaluation_loss_calls_are_looked_at_only_at_the_start_of_a_step():
    from segwatch.shim.lossfn import EVAL_CALLS

    em = MemoryEmitter()
    shim = S.install(emitter=em, hello=False)
    seen = []
    orig = shim._lf_describe
    shim._lf_describe = lambda *a, **k: (seen.append(1), orig(*a, **k))[1]
    crit = nn.CrossEntropyLoss(ignore_index=255)
    x, y = torch.randn(2, C, 4, 4), torch.randint(0, C, (2, 4, 4))
    with torch.no_grad():
        for _ in range(100):        # a validation pass computing its loss per batch
            crit(x, y)
    assert len(seen) == EVAL_CALLS
    assert not _lossfn_events(em)   # nothing the loss will reject: no event
    y[0, 0, 0] = 254                # a target the loss rejects is reported, before the call
    with torch.no_grad(), pytest.raises((IndexError, RuntimeError)):
        shim._lf_eval_n = 0
        crit(x, y)
    assert _lossfn_events(em)[-1]["calls"][0]["target_oor"] == [254]
    S.uninstall()

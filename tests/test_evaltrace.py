"""The evaluation tracer is on only while an evaluation pass runs: ``sys.settrace`` is
restored when the pass ends (it once stayed on for the rest of the run, tracing every Python
call of the training after the first evaluation)."""
from __future__ import annotations

import os
import sys

import pytest

from segwatch.shim.evaltrace import EvalTracer


def _script_function():
    raise ValueError("inside the evaluation")


def test_start_stop_restores_the_trace_function():
    if sys.gettrace() is not None:
        pytest.skip("a debugger or coverage tool traces this run: the tracer stays out by design")
    tr = EvalTracer(os.path.dirname(__file__))
    tr.start()
    assert tr.active and sys.gettrace() is not None
    try:
        _script_function()
    except ValueError:
        pass
    last = tr.stop()
    assert sys.gettrace() is None
    assert not tr.active
    assert last is not None and last["type"] == "ValueError" and "test_evaltrace.py" in last["where"]


def test_no_trace_function_left_after_a_validation_pass():
    if sys.gettrace() is not None:
        pytest.skip("a debugger or coverage tool traces this run: the tracer stays out by design")
    import torch
    import torch.nn as nn
    from torch.utils.data import DataLoader, TensorDataset

    from segwatch.shim import MemoryEmitter, Shim

    torch.manual_seed(0)
    model = nn.Conv2d(3, 4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    crit = nn.CrossEntropyLoss(ignore_index=255)
    train = DataLoader(TensorDataset(torch.randn(8, 3, 8, 8), torch.randint(0, 4, (8, 8, 8))), batch_size=2)
    val = DataLoader(TensorDataset(torch.randn(4, 3, 8, 8), torch.randint(0, 4, (4, 8, 8))), batch_size=2)
    shim = Shim(MemoryEmitter(), {"dataset": {"num_classes": 4, "ignore_index": 255}}, script=__file__)
    shim.install()
    try:
        for img, lab in train:
            loss = crit(model(img), lab)
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        traced_inside = []
        with torch.no_grad():
            for img, lab in val:
                model(img)
                traced_inside.append(sys.gettrace() is not None)
        model.train()
        after = sys.gettrace()
        for img, lab in train:        # the training goes on untraced
            loss = crit(model(img), lab)
            opt.zero_grad()
            loss.backward()
            opt.step()
            assert sys.gettrace() is None
    finally:
        shim.uninstall(finish=True)
    assert any(traced_inside)          # the tracer did run during the pass
    assert after is None
    assert any(e["type"] == "eval" for e in shim.emitter.items)

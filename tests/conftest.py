"""Fixtures shared by several test modules. None is autouse: a module asks for one by name
(``pytestmark = pytest.mark.usefixtures(...)``), and nothing here imports torch before a test
that asks for it runs (most modules never load it)."""
from __future__ import annotations

import pytest


@pytest.fixture
def torch_one_thread_shim_uninstalled():
    """For in-process shim tests: torch on one thread during the test (its thread count
    restored after), and the shim uninstalled after it, whatever the test left installed."""
    import torch

    from segwatch import shim

    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)
    shim.uninstall()

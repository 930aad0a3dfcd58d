"""``stats.class_argmax`` against ``Tensor.max(1).indices`` (the reference) on random logits:
ties, infinities, NaN, every chunking path, odd shapes and the inputs that take the fallback."""
from __future__ import annotations

import pytest
import torch

from segwatch.shim import stats as S


def _logits(seed: int, shape, ties: bool, nan: float = 0.0, inf: float = 0.0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randint(-3, 4, shape, generator=g).to(dtype) if ties     # many exact ties
         else torch.randn(shape, generator=g, dtype=dtype))
    for value, share in ((float("nan"), nan), (float("inf"), inf), (float("-inf"), inf)):
        if share:
            x[torch.rand(shape, generator=g) < share] = value
    return x


@pytest.mark.parametrize("chunk", [1 << 20, 4096, 97])     # one chunk, several items per chunk, row blocks
@pytest.mark.parametrize("seed", range(12))
def test_same_indices_as_max(seed, chunk, monkeypatch):
    monkeypatch.setattr(S, "ARGMAX_CHUNK", chunk)
    g = torch.Generator().manual_seed(1000 + seed)
    c = int(torch.randint(2, 160, (1,), generator=g))
    shape = (int(torch.randint(1, 5, (1,), generator=g)), c, int(torch.randint(8, 70, (1,), generator=g)),
             int(torch.randint(8, 70, (1,), generator=g)))
    x = _logits(seed, shape, ties=seed % 2 == 0, nan=0.002 if seed % 3 == 0 else 0.0,
                inf=0.01 if seed % 4 == 0 else 0.0, dtype=torch.float64 if seed == 5 else torch.float32)
    if x.numel() < (1 << 14):
        x = x.repeat(1, 1, 4, 4)
    got = S.class_argmax(x)
    assert got.dtype == torch.long and got.shape == x.shape[:1] + x.shape[2:]
    assert torch.equal(got, x.max(1).indices)


def test_infinite_and_all_minus_infinity_pixels():
    x = torch.randn(2, 7, 64, 64)
    x[0, 3, :8] = float("inf")
    x[0, 5, :4] = float("inf")                 # two +inf: the first one wins
    x[1, :, 10:20] = float("-inf")             # nothing but -inf: channel 0
    got = S.class_argmax(x)
    assert got[0, :8].eq(3).all() and got[1, 10:20].eq(0).all()
    assert torch.equal(got, x.max(1).indices)
    x[1, 6, 30, 30] = float("nan")             # one NaN pixel: its channel, like max()
    assert torch.equal(S.class_argmax(x), x.max(1).indices)


@pytest.mark.parametrize("make", [
    lambda: torch.randn(2, 9, 80, 80)[..., ::2, ::2],        # a strided view
    lambda: torch.randn(2, 9, 80, 80).to(torch.bfloat16),    # a half type
    lambda: torch.randn(2, 9, 8, 8),                        # too small to be worth it
    lambda: torch.randn(3000, 11),                          # (N, C) logits
    lambda: torch.randn(2, 9, 40, 40, 12),                  # 3-D volumes
])
def test_fallback_and_other_shapes_match(make):
    x = make()
    assert torch.equal(S.class_argmax(x), x.max(1).indices)

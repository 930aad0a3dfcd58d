"""Tests for segwatch.core.metrics against a plain NumPy reference and torchmetrics."""
import math

import numpy as np
import pytest
import torch

from segwatch.core.metrics import (
    ConfusionMatrix,
    class_totals,
    collapse_signature,
    iou_per_class,
    miou_guide,
    miou_mmseg,
    pixel_accuracy,
)

torch.set_num_threads(1)


def ref_matrix(pred, lbl, C, ignore_index=None):
    """Plain NumPy reference: count only labels and predictions in 0..C-1."""
    pred = np.asarray(pred).reshape(-1).astype(np.int64)
    lbl = np.asarray(lbl).reshape(-1).astype(np.int64)
    mask = (lbl >= 0) & (lbl < C) & (pred >= 0) & (pred < C)
    if ignore_index is not None:
        mask &= lbl != ignore_index
    m = np.zeros((C, C), dtype=np.int64)
    np.add.at(m, (lbl[mask], pred[mask]), 1)
    return m


def random_batch(seed, shape, C, ignore_index=None, ignore_share=0.1, logits=True):
    g = torch.Generator().manual_seed(seed)
    B, H, W = shape
    lbl = torch.randint(0, C, (B, H, W), generator=g)
    if ignore_index is not None:
        lbl[torch.rand(B, H, W, generator=g) < ignore_share] = ignore_index
    if logits:
        preds = torch.randn(B, C, H, W, generator=g)
    else:
        preds = torch.randint(0, C, (B, H, W), generator=g)
    return preds, lbl


def as_class_map(preds):
    return preds.argmax(1) if preds.dim() == 4 else preds


SHAPES = [(1, 7, 9), (2, 16, 16), (3, 33, 20)]


@pytest.mark.parametrize("C", [2, 19, 37])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("ignore_index", [None, -1, 255])
@pytest.mark.parametrize("logits", [True, False])
def test_matches_numpy_reference(C, shape, ignore_index, logits):
    cm_t = ConfusionMatrix(C, ignore_index)
    cm_n = ConfusionMatrix(C, ignore_index)
    want = np.zeros((C, C), dtype=np.int64)
    for seed in range(3):
        preds, lbl = random_batch(seed * 7 + C, shape, C, ignore_index, logits=logits)
        cm_t.update(preds, lbl)
        cm_n.update(preds.numpy(), lbl.numpy())
        want += ref_matrix(as_class_map(preds).numpy(), lbl.numpy(), C, ignore_index)
    assert cm_t.matrix.dtype == np.int64
    np.testing.assert_array_equal(cm_t.matrix, want)
    np.testing.assert_array_equal(cm_n.matrix, want)
    assert cm_t.pixels == want.sum() == cm_n.pixels
    assert cm_t.oor == cm_n.oor == 0
    assert cm_t.ignored == cm_n.ignored


@pytest.mark.parametrize("C", [2, 19, 37])
@pytest.mark.parametrize("ignore_index", [-1, 255])
def test_matches_torchmetrics(C, ignore_index):
    from torchmetrics.classification import (
        MulticlassConfusionMatrix,
        MulticlassJaccardIndex,
    )

    tm_cm = MulticlassConfusionMatrix(num_classes=C, ignore_index=ignore_index)
    # torchmetrics' "macro" Jaccard averages over the classes whose union is non-empty,
    # i.e. our mmseg convention; its per-class ("none") result scores absent classes 0
    # (zero_division=0), so its plain mean is the guide's convention (NaN -> 0, mean over C).
    tm_macro = MulticlassJaccardIndex(num_classes=C, ignore_index=ignore_index, average="macro")
    tm_none = MulticlassJaccardIndex(num_classes=C, ignore_index=ignore_index, average="none")
    cm = ConfusionMatrix(C, ignore_index)
    for seed, shape in enumerate(SHAPES):
        preds, lbl = random_batch(100 + seed, shape, C, ignore_index)
        if C > 2:  # make some classes absent from both GT and predictions
            lbl[(lbl == 1)] = 0
            preds[:, 1] = -1e9
        cm.update(preds, lbl)
        tm_cm.update(preds, lbl)
        tm_macro.update(preds, lbl)
        tm_none.update(preds, lbl)
    m = cm.matrix
    np.testing.assert_array_equal(m, tm_cm.compute().numpy())
    assert miou_mmseg(m) == pytest.approx(float(tm_macro.compute()) * 100, abs=1e-4)
    assert miou_guide(m) == pytest.approx(float(tm_none.compute().mean()) * 100, abs=1e-4)
    if C > 2:
        assert math.isnan(iou_per_class(m)[1])
        assert miou_guide(m) < miou_mmseg(m)


def test_all_ignore_batch():
    C = 19
    cm = ConfusionMatrix(C, 255)
    preds = torch.randn(2, C, 8, 8)
    lbl = torch.full((2, 8, 8), 255)
    cm.update(preds, lbl)
    cm.update(preds.numpy(), lbl.numpy())
    assert cm.pixels == 0
    assert cm.ignored == 2 * 2 * 64
    assert cm.oor == 0
    assert not cm.matrix.any()
    assert miou_guide(cm.matrix) == 0.0
    assert math.isnan(miou_mmseg(cm.matrix))
    assert math.isnan(pixel_accuracy(cm.matrix))
    assert collapse_signature(cm.matrix) is None


@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_out_of_range_labels_counted_not_indexed(backend):
    C = 37
    preds, lbl = random_batch(5, (2, 20, 20), C, ignore_index=-1)
    lbl[0, :3, :] = 255  # another ignore convention: not ours, so out of range
    lbl[1, 0, :5] = 37   # one past the last class
    lbl[1, 1, :2] = -7
    want = ref_matrix(preds.argmax(1).numpy(), lbl.numpy(), C, -1)
    cm = ConfusionMatrix(C, ignore_index=-1)
    if backend == "torch":
        cm.update(preds, lbl)
    else:
        cm.update(preds.numpy(), lbl.numpy())
    np.testing.assert_array_equal(cm.matrix, want)
    assert cm.oor == 60 + 5 + 2
    assert cm.oor_values == {255: 60, 37: 5, -7: 2}
    assert list(cm.oor_values) == [255, 37, -7]  # largest counts first
    assert cm.ignored == int((lbl == -1).sum())
    assert cm.pixels + cm.oor + cm.ignored == lbl.numel()


def test_oor_values_top_16():
    C = 2
    lbl = torch.zeros(1, 1, 40, dtype=torch.int64)
    vals = list(range(10, 30))
    for i, v in enumerate(vals):
        lbl[0, 0, i * 2 : i * 2 + 2] = v
    lbl[0, 0, 0:4] = 99  # most frequent
    cm = ConfusionMatrix(C, None)
    cm.update(torch.zeros_like(lbl), lbl)
    ov = cm.oor_values
    assert len(ov) == 16
    assert next(iter(ov)) == 99
    assert cm.oor == 40


def test_uint8_labels_with_255_ignore():
    C = 37
    g = torch.Generator().manual_seed(3)
    lbl = torch.randint(0, C, (2, 12, 12), generator=g).to(torch.uint8)
    lbl[:, :2] = 255
    preds = torch.randn(2, C, 12, 12, generator=g)
    cm = ConfusionMatrix(C, 255)
    cm.update(preds, lbl)  # label * C must not overflow uint8
    np.testing.assert_array_equal(
        cm.matrix, ref_matrix(preds.argmax(1).numpy(), lbl.numpy(), C, 255)
    )
    assert cm.ignored == 2 * 2 * 12 and cm.oor == 0


@pytest.mark.parametrize("dtype", [torch.int16, torch.int32, torch.uint8, torch.int8])
def test_narrow_integer_class_maps(dtype):
    C = 200 if dtype in (torch.int16, torch.int32) else 100  # C*C overflows int16
    g = torch.Generator().manual_seed(8)
    lbl = torch.randint(0, C, (2, 9, 9), generator=g).to(dtype)
    preds = torch.randint(0, C, (2, 9, 9), generator=g).to(dtype)
    cm = ConfusionMatrix(C)
    cm.update(preds, lbl)
    np.testing.assert_array_equal(cm.matrix, ref_matrix(preds.numpy(), lbl.numpy(), C))
    assert cm.pixels == 162


def test_predictions_out_of_range_never_corrupt():
    C = 5
    lbl = torch.tensor([[0, 1, 2, 3, 4, 4]])
    preds = torch.tensor([[0, 7, -1, 3, 4, 5]])
    cm = ConfusionMatrix(C)
    cm.update(preds, lbl)
    np.testing.assert_array_equal(cm.matrix, ref_matrix(preds, lbl, C))
    assert cm.pred_oor == 3
    assert cm.pixels == 3
    # logits with more channels than classes
    cm2 = ConfusionMatrix(C)
    logits = torch.full((1, 7, 1, 6), -1.0)
    logits[0, 6, 0, :2] = 5.0
    cm2.update(logits, lbl.view(1, 1, 6))
    assert cm2.pred_oor == 2
    assert cm2.pixels == 4


def test_size_mismatch_counted_and_skipped():
    C = 19
    cm = ConfusionMatrix(C, 255)
    cm.update(torch.randn(2, C, 16, 16), torch.zeros(2, 32, 32, dtype=torch.long))
    cm.update(np.zeros((2, 16, 16)), np.zeros((2, 16, 17), dtype=np.int64))
    cm.update(torch.randn(2, C, 16, 16), torch.zeros(3, 16, 16, dtype=torch.long))
    assert cm.size_mismatch == 3
    assert cm.pixels == 0
    cm.update(torch.randn(2, C, 16, 16), torch.zeros(2, 1, 16, 16, dtype=torch.long))
    assert cm.pixels == 2 * 256
    assert cm.size_mismatch == 3


def test_integer_maps_with_extra_dim_are_a_mismatch_not_logits():
    cm = ConfusionMatrix(3)
    cm.update(torch.zeros(1, 4, 4, dtype=torch.long), torch.zeros(4, 4, dtype=torch.long))
    cm.update(np.zeros((1, 4, 4), dtype=np.int64), np.zeros((4, 4), dtype=np.int64))
    assert cm.size_mismatch == 2 and cm.pixels == 0
    # float logits [C, H, W] with labels [H, W] are fine
    cm.update(torch.randn(3, 4, 4), torch.zeros(4, 4, dtype=torch.long))
    assert cm.pixels == 16


def test_half_precision_logits():
    C = 19
    preds, lbl = random_batch(21, (2, 12, 12), C, ignore_index=255)
    preds = preds.half()
    cm = ConfusionMatrix(C, 255)
    cm.update(preds, lbl)
    np.testing.assert_array_equal(
        cm.matrix, ref_matrix(preds.float().argmax(1).numpy(), lbl.numpy(), C, 255))


@pytest.mark.parametrize("C", [2, 19, 37])
def test_single_class_collapse_signature(C):
    preds, lbl = random_batch(11, (2, 24, 24), C, ignore_index=-1)
    c = C - 1
    logits = torch.zeros_like(preds)
    logits[:, c] = 1.0
    cm = ConfusionMatrix(C, -1)
    cm.update(logits, lbl)
    m = cm.matrix
    sig = collapse_signature(m)
    valid = lbl[lbl != -1]
    p_c = float((valid == c).sum()) / valid.numel()
    assert sig["class"] == c
    assert sig["share"] == pytest.approx(p_c)
    assert miou_guide(m) == pytest.approx(100 * p_c / C, rel=1e-12)
    assert sig["expected_miou"] == pytest.approx(sig["observed_miou"], rel=1e-12)
    assert sig["expected_miou_mmseg"] == pytest.approx(sig["observed_miou_mmseg"], rel=1e-12)


def test_collapse_on_only_present_class_gives_100_over_C():
    C = 37
    lbl = torch.full((1, 8, 8), 4)
    lbl[0, 0] = -1
    cm = ConfusionMatrix(C, -1)
    cm.update(torch.full((1, 8, 8), 4), lbl)
    assert miou_guide(cm.matrix) == pytest.approx(100 / C)  # the guide's "2.7%"
    assert round(miou_guide(cm.matrix), 2) == 2.7
    assert collapse_signature(cm.matrix)["share"] == 1.0


def test_no_collapse_signature_with_two_predicted_classes():
    m = np.array([[3, 1], [0, 2]])
    assert collapse_signature(m) is None


def test_merge_equals_sum_and_reset():
    C = 19
    parts = [ConfusionMatrix(C, 255) for _ in range(3)]
    whole = ConfusionMatrix(C, 255)
    for i, cm in enumerate(parts):
        preds, lbl = random_batch(40 + i, (2, 10, 10), C, ignore_index=255)
        lbl[0, 0, :3] = 19
        cm.update(preds, lbl)
        whole.update(preds, lbl)
    cm.size_mismatch += 1
    merged = ConfusionMatrix(C, 255)
    for cm in parts:
        merged.merge(cm)
    np.testing.assert_array_equal(merged.matrix, sum(p.matrix for p in parts))
    np.testing.assert_array_equal(merged.matrix, whole.matrix)
    assert merged.oor == whole.oor == 9
    assert merged.oor_values == {19: 9}
    assert merged.ignored == whole.ignored
    assert merged.size_mismatch == 1
    with pytest.raises(ValueError):
        merged.merge(ConfusionMatrix(C + 1, 255))
    merged.reset()
    assert merged.pixels == 0 and merged.oor == 0 and merged.size_mismatch == 0
    assert merged.oor_values == {}


def test_ignore_index_inside_range_and_none():
    C = 4
    lbl = torch.tensor([[0, 1, 2, 3, -1]])
    preds = torch.tensor([[0, 1, 1, 3, 2]])
    cm = ConfusionMatrix(C, ignore_index=0)
    cm.update(preds, lbl)
    assert cm.ignored == 1 and cm.oor == 1 and cm.pixels == 3
    cm = ConfusionMatrix(C, ignore_index=None)
    cm.update(preds.numpy(), lbl.numpy())
    assert cm.ignored == 0 and cm.oor_values == {-1: 1} and cm.pixels == 4


def test_float_labels_fractional_counted():
    C = 3
    lbl = torch.tensor([[0.0, 1.0, 1.5, 2.0, float("nan")]])
    preds = torch.tensor([[0, 1, 1, 2, 0]])
    for backend in ("torch", "numpy"):
        cm = ConfusionMatrix(C, -1)
        if backend == "torch":
            cm.update(preds, lbl)
        else:
            cm.update(preds.numpy(), lbl.numpy())
        assert cm.fractional == 2, backend
        assert cm.pixels == 3, backend
        assert np.trace(cm.matrix) == 3


def test_device_path_matches_cpu_path():
    """The sync-free accelerator path, exercised on CPU tensors."""
    C = 37
    preds, lbl = random_batch(9, (2, 16, 16), C, ignore_index=-1)
    lbl[0, 0, :4] = 255
    lbl[1, 0, :2] = 40
    a, b = ConfusionMatrix(C, -1), ConfusionMatrix(C, -1)
    a.update(preds, lbl)
    with torch.no_grad():
        b._update_torch_device(torch, preds, lbl, 1)
    np.testing.assert_array_equal(a.matrix, b.matrix)
    assert a.oor_values == b.oor_values == {255: 4, 40: 2}
    assert a.ignored == b.ignored


def test_module_functions():
    m = np.array([[5, 1, 0], [2, 3, 0], [0, 0, 0]])
    gt, pred, correct = class_totals(m)
    np.testing.assert_array_equal(gt, [6, 5, 0])
    np.testing.assert_array_equal(pred, [7, 4, 0])
    np.testing.assert_array_equal(correct, [5, 3, 0])
    iou = iou_per_class(m)
    assert iou[0] == pytest.approx(5 / 8) and iou[1] == pytest.approx(3 / 6)
    assert math.isnan(iou[2])
    assert miou_guide(m) == pytest.approx((5 / 8 + 3 / 6) / 3 * 100)
    assert miou_mmseg(m) == pytest.approx((5 / 8 + 3 / 6) / 2 * 100)
    assert pixel_accuracy(m) == pytest.approx(8 / 11 * 100)
    with pytest.raises(ValueError):
        iou_per_class(np.zeros((2, 3)))


def test_bad_constructor_arguments():
    with pytest.raises(TypeError):
        ConfusionMatrix(19, "auto")
    with pytest.raises(ValueError):
        ConfusionMatrix(0)

"""``stats.classify_batch`` on mmseg-style batches (issue 17): ``{'inputs': [uint8 [3, H, W]
per sample], 'data_samples': [SegDataSample-like]}``, without mmseg installed."""
from __future__ import annotations

import torch

from segwatch.shim import stats as ST


class _Pixels:
    def __init__(self, data):
        self.data = data


class _Sample:
    """The part of mmseg's SegDataSample the shim reads: ``gt_sem_seg.data`` ([1, H, W])."""

    def __init__(self, label=None):
        if label is not None:
            self.gt_sem_seg = _Pixels(label)


def _batch(labels, hw=(6, 7)):
    g = torch.Generator().manual_seed(0)
    inputs = [torch.randint(0, 256, (3, *hw), generator=g, dtype=torch.uint8) for _ in labels]
    return {"inputs": inputs, "data_samples": [_Sample(lab) for lab in labels]}


def test_labels_come_from_data_samples_stacked():
    labs = [torch.full((1, 6, 7), v, dtype=torch.uint8) for v in (1, 2, 255)]
    images, label = ST.classify_batch(_batch(labs))
    assert images == []
    key, t = label
    assert key == "data_samples.gt_sem_seg"
    assert t.shape == (3, 6, 7) and t.dtype == torch.uint8
    assert [int(t[i].unique()) for i in range(3)] == [1, 2, 255]


def test_an_image_from_a_list_of_3_channel_tensors_is_never_the_label():
    # samples without gt_sem_seg (test-time batches): no label at all, not inputs.0
    images, label = ST.classify_batch(_batch([None, None]))
    assert label is None and images == []
    # sizes that differ: the samples cannot be stacked, and the images are still no label
    labs = [torch.zeros(1, 6, 7, dtype=torch.long), torch.zeros(1, 5, 7, dtype=torch.long)]
    images, label = ST.classify_batch(_batch(labs))
    assert label is None


def test_other_layouts_keep_their_label():
    img = torch.randn(2, 3, 6, 7)
    gt = torch.randint(0, 4, (2, 6, 7))
    # default_collate of (image, label) samples: a list of a 4-D image and a 3-D label
    images, label = ST.classify_batch([img, gt])
    assert label[0] == "1" and label[1] is gt and images[0][1] is img
    # the mmseg adapter's collate adds the stacked labels as "gt_sem_seg": that tensor is used
    b = _batch([torch.ones(1, 6, 7, dtype=torch.long)] * 2)
    b["gt_sem_seg"] = torch.ones(2, 6, 7, dtype=torch.long)
    images, label = ST.classify_batch(b)
    assert label[0] == "gt_sem_seg" and label[1] is b["gt_sem_seg"]

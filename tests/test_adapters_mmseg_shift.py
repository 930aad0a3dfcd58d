"""mmsegmentation itself (through ``segwatch run``): the reverse ``reduce_zero_label``
mismatch, annotations that are already 0-based (255 unlabeled) read with
``reduce_zero_label=True``. mmseg maps 0 -> 255 and k -> k - 1 (255 -> 254 -> 255: no 254
appears), so class 0 is ignored and the last class never shows: label.last_class_missing,
armed by the adapter's ``dataset_facts`` note."""
from __future__ import annotations

import numpy as np
import pytest
from test_adapters import describe
from test_adapters_mmseg import CLASSES, _run_mmseg


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_mmseg_reduce_zero_label_on_zero_based_annotations_is_found(tmp_path):
    rep, events, proc = _run_mmseg(tmp_path, zero_is_unlabeled=False, reduce_zero_label=True)
    facts = [e for e in events if e.get("type") == "probe" and e.get("name") == "dataset_facts"]
    assert facts and facts[0]["reduce_zero_label"] is True and facts[0]["source"] == "mmseg"
    hist = np.sum([e["labels"]["hist"] for e in events if e.get("type") == "batch"
                   and e.get("phase") == "train" and e.get("labels")], axis=0)
    assert hist[len(CLASSES) - 1] == 0 and np.count_nonzero(hist) == len(CLASSES) - 1, hist
    f = [f for f in rep["findings"] if f["id"] == "label.last_class_missing"]
    assert f, describe(rep)
    assert f[0]["evidence"]["class"] == len(CLASSES) - 1 and f[0]["evidence"]["source"] == "framework"
    # mmseg's own loss is seen too: F.cross_entropy with ignore_index 255
    lossfn = [e for e in events if e.get("type") == "lossfn"]
    assert lossfn and lossfn[-1]["calls"][0]["fn"] == "F.cross_entropy"
    assert lossfn[-1]["calls"][0]["ignore_index"] == 255

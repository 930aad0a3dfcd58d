"""Discovery picks the main prediction head when an auxiliary head of the same shape is computed
after it (mmseg auxiliary_head, torchvision aux_classifier, an unnamed side head)."""
from __future__ import annotations

import pytest

from test_shim import SCRIPTS, cfg, of, run_shim

AUX = SCRIPTS / "train_aux_heads.py"


@pytest.mark.slow
@pytest.mark.parametrize("style,site,classes", [
    ("mmseg", "decode_head", 5),       # losses returned: the head is the prediction site
    ("mmseg", "decode_head", None),    # ... also without a configured class count
    ("tv", "root", 5),                 # {'out', 'aux'}: the root's 'out' is the site
    ("unnamed", "root", 5),            # no aux* name: the returned logits decide
    ("single", "root", 5),             # one head: unchanged
])
def test_main_head_not_the_auxiliary_one(tmp_path, style, site, classes):
    proc, ev = run_shim(tmp_path, AUX, "--style", style, config=cfg(classes) if classes else None)
    assert proc.returncode == 0, proc.stderr
    m = of(ev, "model")[0]
    assert m["site"] == site and m["head"] == "decode_head" and m["out_channels"] == 5
    train = [e for e in of(ev, "preds") if e["phase"] == "train"]
    assert train and all(e["site"] == site for e in train)

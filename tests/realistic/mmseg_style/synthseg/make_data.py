"""Write the synthetic street-scene PNGs in mmseg's layout under ``data/synth_street``
(``img_dir/{train,val}``, ``ann_dir/{train,val}``), as a dataset-conversion script of
mmseg's ``tools/dataset_converters/`` would.

    python synthseg/make_data.py [ROOT] [--unlabeled-255]

Annotations store 0 = unlabeled and 1..6 = the classes (ADE20K's convention, read with
``reduce_zero_label=True``); ``--unlabeled-255``: 0..5 and 255 = unlabeled.
"""
import argparse
import os

import numpy as np
from PIL import Image

SIZE = 64
CLASSES = 6


def _sample(rng, zero_is_unlabeled):
    # a few blocks per image; a block's class sets its colour (plus noise): learnable in
    # a few dozen iterations by a tiny model
    colours = np.linspace(20, 235, CLASSES)
    ann = np.zeros((SIZE, SIZE), np.int64)
    step = SIZE // 4
    for by in range(4):
        for bx in range(4):
            ann[by * step:(by + 1) * step, bx * step:(bx + 1) * step] = int(rng.integers(CLASSES))
    img = np.stack([colours[ann], colours[::-1][ann], (ann * 37) % 256], -1).astype(np.float64)
    img += rng.normal(0, 8, img.shape)
    unlabeled = np.kron(rng.random((SIZE // 8, SIZE // 8)) < 0.1, np.ones((8, 8), bool))
    if zero_is_unlabeled:
        ann = ann + 1
        ann[unlabeled] = 0
    else:
        ann[unlabeled] = 255
    return np.clip(img, 0, 255).astype(np.uint8), ann.astype(np.uint8)


def write(root, zero_is_unlabeled=True, n_train=32, n_val=8, seed=0):
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        for kind in ("img_dir", "ann_dir"):
            os.makedirs(os.path.join(root, kind, split), exist_ok=True)
        for i in range(n):
            img, ann = _sample(rng, zero_is_unlabeled)
            Image.fromarray(img).save(os.path.join(root, "img_dir", split, f"{i:04d}.png"))
            Image.fromarray(ann).save(os.path.join(root, "ann_dir", split, f"{i:04d}.png"))
    return root


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("root", nargs="?", default="data/synth_street")
    p.add_argument("--unlabeled-255", action="store_true")
    a = p.parse_args()
    write(a.root, zero_is_unlabeled=not a.unlabeled_255)

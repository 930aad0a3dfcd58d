"""Synthetic images and annotation PNGs in mmsegmentation's layout (``img_dir/{train,val}``,
``ann_dir/{train,val}``), for ``mmseg_train.py``.

Each image is a few axis-aligned blocks; a block's class sets its colour (plus noise), so a
tiny model learns it in a few dozen iterations.  ``zero_is_unlabeled``: annotations hold
``0`` for unlabeled and ``1..C`` for the classes (ADE20K's convention, read with
``reduce_zero_label=True``); otherwise ``0..C-1`` and ``255`` for unlabeled (read with
``reduce_zero_label=False``).

    python mmseg_data.py ROOT [--zero-is-unlabeled] [--classes 6]
"""
import argparse
import os

import numpy as np
from PIL import Image

SIZE = 64


def _sample(rng, C, zero_is_unlabeled):
    colours = np.linspace(20, 235, C)
    ann = np.zeros((SIZE, SIZE), np.int64)
    img = np.zeros((SIZE, SIZE, 3), np.float64)
    step = SIZE // 4
    for by in range(4):
        for bx in range(4):
            c = int(rng.integers(C))
            ann[by * step:(by + 1) * step, bx * step:(bx + 1) * step] = c
    img[..., 0] = colours[ann]
    img[..., 1] = colours[::-1][ann]
    img[..., 2] = (ann * 37) % 256
    img += rng.normal(0, 8, img.shape)
    unlabeled = rng.random((SIZE // 8, SIZE // 8)) < 0.1
    unlabeled = np.kron(unlabeled, np.ones((8, 8), bool))
    if zero_is_unlabeled:
        ann = ann + 1
        ann[unlabeled] = 0
    else:
        ann[unlabeled] = 255
    return np.clip(img, 0, 255).astype(np.uint8), ann.astype(np.uint8)


def write_dataset(root, classes=6, zero_is_unlabeled=False, n_train=32, n_val=8, seed=0):
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        os.makedirs(os.path.join(root, "img_dir", split), exist_ok=True)
        os.makedirs(os.path.join(root, "ann_dir", split), exist_ok=True)
        for i in range(n):
            img, ann = _sample(rng, classes, zero_is_unlabeled)
            Image.fromarray(img).save(os.path.join(root, "img_dir", split, f"{i:04d}.png"))
            Image.fromarray(ann).save(os.path.join(root, "ann_dir", split, f"{i:04d}.png"))
    return root


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("root")
    p.add_argument("--zero-is-unlabeled", action="store_true")
    p.add_argument("--classes", type=int, default=6)
    a = p.parse_args()
    write_dataset(a.root, a.classes, a.zero_is_unlabeled)

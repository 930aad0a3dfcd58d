"""A Carvana-like dataset in the shape of Pytorch-UNet's ``BasicDataset``: RGB images with
a car-like blob, masks stored with the values {0, 255}; ``mask_values`` are found by
scanning the masks and each value is mapped to its index; images scaled by ``scale`` and
brought to [0, 1].  The "files" are drawn in memory."""
import numpy as np
import torch
from torch.utils.data import Dataset


def draw_car(rng, size):
    """(image uint8 HxWx3, mask uint8 HxW in {0, 255})."""
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.uniform(0.35, 0.65, 2) * size
    ry, rx = rng.uniform(0.15, 0.3) * size, rng.uniform(0.25, 0.4) * size
    body = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    mask = np.where(body, 255, 0).astype(np.uint8)
    floor = np.array([110, 110, 120]) + rng.normal(0, 6, 3)
    paint = rng.uniform(20, 235, 3)
    img = np.where(body[..., None], paint, floor) + rng.normal(0, 12, (size, size, 3))
    img[(yy // 4 + xx // 4) % 2 == 0] += 10  # a checkered studio floor
    return np.clip(img, 0, 255).astype(np.uint8), mask


def _resize(arr, scale):
    h, w = arr.shape[:2]
    nh, nw = int(scale * h), int(scale * w)
    assert nh > 0 and nw > 0, "Scale is too small, resized images would have no pixel"
    ys, xs = (np.arange(nh) / scale).astype(int), (np.arange(nw) / scale).astype(int)
    return arr[ys][:, xs]


class BasicDataset(Dataset):
    def __init__(self, n_images, size=64, scale=1.0, seed=0):
        assert 0 < scale <= 1, "Scale must be between 0 and 1"
        self.scale = scale
        rng = np.random.RandomState(seed)
        self.files = [draw_car(rng, size) for _ in range(n_images)]
        self.ids = [f"car_{i:04d}" for i in range(n_images)]
        self.mask_values = sorted(np.unique(np.concatenate([np.unique(m) for _, m in self.files])).tolist())

    def __len__(self):
        return len(self.ids)

    @staticmethod
    def preprocess(mask_values, img, scale, is_mask):
        img = _resize(img, scale)
        if is_mask:
            mask = np.zeros(img.shape[:2], dtype=np.int64)
            for i, v in enumerate(mask_values):
                mask[img == v] = i
            return mask
        img = img.transpose((2, 0, 1))
        return img / 255.0 if (img > 1).any() else img

    def __getitem__(self, idx):
        img, mask = self.files[idx]
        img = self.preprocess(self.mask_values, img, self.scale, is_mask=False)
        mask = self.preprocess(self.mask_values, mask, self.scale, is_mask=True)
        return {"image": torch.as_tensor(img.copy()).float().contiguous(),
                "mask": torch.as_tensor(mask.copy()).long().contiguous()}

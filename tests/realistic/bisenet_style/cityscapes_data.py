"""The data side of CoinCheung/BiSeNet, scaled down: ``BaseDataset`` reads ``img,label``
pairs from an annotation file and maps the raw Cityscapes label ids through a 256-entry
uint8 lookup table (``lb_map``: evaluated ids -> train ids 0..18, every other id -> 255)
BEFORE the transforms; ``TransformationTrain`` = random rescale + random crop (padding the
label with 255) + flip; ``ToTensor`` normalises; labels come out as ``[1, H, W]`` (the
training loop squeezes them).  The loader draws ``ims_per_gpu * max_iter`` samples through a
repeated sampler, so the whole training is one pass of one loader.

``write_fake_cityscapes(root)`` draws street scenes (raw ids: sky 23, building 11,
vegetation 21, road 7, sidewalk 8, car 26, person 24, 'static' 4, unlabeled 0) as PNGs with
``train.txt`` / ``val.txt``.  PIL stands in for cv2 here."""
import os

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
             25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


class RandomResizedCrop:
    def __init__(self, scales, size):
        self.scales, self.size = scales, size

    def __call__(self, im_lb, rng):
        im, lb = im_lb["im"], im_lb["lb"]
        scale = rng.uniform(*self.scales)
        h, w = lb.shape
        nh, nw = int(h * scale + 0.5), int(w * scale + 0.5)
        im = np.asarray(Image.fromarray(im).resize((nw, nh), Image.BILINEAR))
        lb = np.asarray(Image.fromarray(lb).resize((nw, nh), Image.NEAREST))
        ch, cw = self.size
        ph, pw = max(ch - nh, 0), max(cw - nw, 0)
        if ph or pw:   # pad: image with 0, label with 255 (ignored)
            im = np.pad(im, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
            lb = np.pad(lb, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)), constant_values=255)
        y = rng.randint(0, lb.shape[0] - ch + 1)
        x = rng.randint(0, lb.shape[1] - cw + 1)
        return dict(im=im[y:y + ch, x:x + cw], lb=lb[y:y + ch, x:x + cw])


class RandomHorizontalFlip:
    def __call__(self, im_lb, rng):
        if rng.rand() < 0.5:
            return dict(im=im_lb["im"][:, ::-1], lb=im_lb["lb"][:, ::-1])
        return im_lb


class TransformationTrain:
    def __init__(self, scales, cropsize):
        self.ops = [RandomResizedCrop(scales, cropsize), RandomHorizontalFlip()]
        self.rng = np.random.RandomState(0)

    def __call__(self, im_lb):
        for op in self.ops:
            im_lb = op(im_lb, self.rng)
        return im_lb


class ToTensor:
    def __init__(self, mean, std):
        self.mean = np.array(mean, np.float32)
        self.std = np.array(std, np.float32)

    def __call__(self, im_lb):
        im = (im_lb["im"].astype(np.float32) / 255.0 - self.mean) / self.std
        im = torch.from_numpy(np.ascontiguousarray(im.transpose(2, 0, 1)))
        return dict(im=im, lb=torch.from_numpy(np.ascontiguousarray(im_lb["lb"]).astype(np.int64)))


class CityScapes(Dataset):
    FAULT = "none"   # "no_train_id": lb_map is None, the raw ids reach the loss

    def __init__(self, dataroot, annpath, trans_func=None, mode="train"):
        self.mode, self.trans_func = mode, trans_func
        with open(annpath) as fr:
            pairs = [line.split(",") for line in fr.read().splitlines() if line]
        self.img_paths = [os.path.join(dataroot, a) for a, _ in pairs]
        self.lb_paths = [os.path.join(dataroot, b) for _, b in pairs]
        self.n_cats = 19
        self.lb_ignore = 255
        self.lb_map = np.full(256, 255, dtype=np.uint8)
        for raw, train_id in TRAIN_IDS.items():
            self.lb_map[raw] = train_id
        if self.FAULT == "no_train_id":
            self.lb_map = None
        self.to_tensor = ToTensor(mean=(0.3257, 0.3690, 0.3223), std=(0.2112, 0.2148, 0.2115))

    def __getitem__(self, idx):
        img = np.asarray(Image.open(self.img_paths[idx]).convert("RGB"))
        label = np.asarray(Image.open(self.lb_paths[idx]))
        if self.lb_map is not None:
            label = self.lb_map[label]
        im_lb = dict(im=img, lb=label)
        if self.trans_func is not None:
            im_lb = self.trans_func(im_lb)
        im_lb = self.to_tensor(im_lb)
        return im_lb["im"].detach(), im_lb["lb"].unsqueeze(0).detach()

    def __len__(self):
        return len(self.img_paths)


class RepeatedSampler(Sampler):
    """``n_samples`` indices: shuffled passes over the dataset, repeated."""

    def __init__(self, dataset, n_samples, seed=0):
        self.n, self.size, self.seed = n_samples, len(dataset), seed

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed)
        idx = []
        while len(idx) < self.n:
            idx += torch.randperm(self.size, generator=g).tolist()
        return iter(idx[:self.n])

    def __len__(self):
        return self.n


def get_data_loader(cfg, mode="train"):
    if mode == "train":
        ds = CityScapes(cfg.im_root, cfg.train_im_anns, TransformationTrain(cfg.scales, cfg.cropsize), mode)
        sampler = RepeatedSampler(ds, cfg.ims_per_gpu * cfg.max_iter)
        return DataLoader(ds, batch_size=cfg.ims_per_gpu, sampler=sampler, drop_last=True, num_workers=0)
    ds = CityScapes(cfg.im_root, cfg.val_im_anns, None, mode)
    return DataLoader(ds, batch_size=cfg.eval_ims_per_gpu, shuffle=False, drop_last=False, num_workers=0)


_COLOURS = {7: (128, 64, 128), 8: (244, 35, 232), 11: (70, 70, 70), 21: (107, 142, 35),
            23: (70, 130, 180), 24: (220, 20, 60), 26: (0, 0, 142), 4: (20, 20, 20), 0: (0, 0, 0)}


def _street(rng, h, w):
    lab = np.full((h, w), 11, np.uint8)                                # building
    lab[:rng.randint(h // 6, h // 3)] = 23                             # sky
    ground = rng.randint(5 * h // 8, 3 * h // 4)
    x = rng.randint(0, 3 * w // 4)
    lab[h // 4:ground, x:x + rng.randint(w // 12, w // 4)] = 21        # vegetation
    lab[ground:] = 7                                                   # road
    lab[ground:ground + 4] = 8                                         # sidewalk
    for _ in range(rng.randint(1, 3)):
        x = rng.randint(4, 4 * w // 5)
        lab[ground - 6:ground + 6, x:x + rng.randint(w // 10, w // 6)] = 26   # car
    x = rng.randint(2, w - 8)
    lab[ground - 14:ground + 2, x:x + 5] = 24                          # person
    x = rng.randint(0, w - 6)
    lab[h // 3:h // 3 + 5, x:x + 6] = 4                                # 'static' -> 255
    lab[:, :2] = 0; lab[:, -2:] = 0; lab[-2:] = 0                      # unlabeled border
    img = np.zeros((h, w, 3), np.float32)
    for k, c in _COLOURS.items():
        img[lab == k] = c
    img += rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), lab


def write_fake_cityscapes(root, n_train=32, n_val=8, h=64, w=128, seed=0):
    rng = np.random.RandomState(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        lines = []
        for i in range(n):
            im_rel = "leftImg8bit/%s/ulm/ulm_%06d_000019_leftImg8bit.png" % (split, i)
            lb_rel = "gtFine/%s/ulm/ulm_%06d_000019_gtFine_labelIds.png" % (split, i)
            img, lab = _street(rng, h, w)
            for rel, arr in ((im_rel, img), (lb_rel, lab)):
                os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
                Image.fromarray(arr).save(os.path.join(root, rel))
            lines.append(im_rel + "," + lb_rel)
        with open(os.path.join(root, split + ".txt"), "w") as fw:
            fw.write("\n".join(lines) + "\n")

"""RGB-D data in the shape of DFormer's ``RGBXDataset``: label maps are stored as uint8 with
0 = unlabeled and 1..C for the classes, and ``_gt_transform`` shifts them by ``gt - 1`` so
that unlabeled wraps around to 255 (the ignore label).  Depth is a gray image replicated to
three channels.  The "files" are drawn in memory (indoor-like layouts: a wall, a floor at
the bottom, furniture rectangles), each class with its own colour and depth."""
import numpy as np
import torch
from torch.utils import data

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def _palette(num_classes):
    rng = np.random.RandomState(7)
    colours = rng.randint(20, 235, size=(num_classes + 1, 3)).astype(np.uint8)
    depth = rng.permutation(np.linspace(30, 230, num_classes + 1)).astype(np.uint8)
    return colours, depth


def draw_scene(rng, h, w, num_classes):
    """(rgb uint8 HxWx3, depth uint8 HxW, label uint8 HxW with 0 = unlabeled)."""
    label = np.ones((h, w), np.uint8)  # 1 = wall
    label[rng.randint(int(h * 0.55), int(h * 0.8)):, :] = 2  # floor
    for _ in range(rng.randint(3, 6)):
        c = rng.randint(3, num_classes + 1)
        bh, bw = rng.randint(h // 6, h // 2), rng.randint(w // 6, w // 2)
        y, x = rng.randint(0, h - bh), rng.randint(0, w - bw)
        label[y:y + bh, x:x + bw] = c
    y, x = rng.randint(0, h - 4), rng.randint(0, w - 8)
    label[y:y + rng.randint(2, 5), x:x + rng.randint(4, 9)] = 0  # an unannotated patch
    colours, depths = _palette(num_classes)
    rgb = colours[label].astype(np.float32) + rng.normal(0, 8, (h, w, 3))
    depth = depths[label].astype(np.float32) + rng.normal(0, 5, (h, w))
    return (np.clip(rgb, 0, 255).astype(np.uint8), np.clip(depth, 0, 255).astype(np.uint8), label)


def normalize(img):
    img = img.astype(np.float32) / 255.0
    return (img - MEAN) / STD


class RGBXDataset(data.Dataset):
    def __init__(self, setting, split_name, preprocess=None, file_length=None):
        self._split_name = split_name
        self._gt_transform = setting["gt_transform"]
        self._num_classes = setting["num_classes"]
        self._size = setting["size"]
        self._num_files = setting["num_files"]
        self._file_length = file_length
        self.preprocess = preprocess

    def __len__(self):
        # as in DFormer: the training set is repeated to batch_size * niters_per_epoch
        return self._file_length if self._file_length is not None else self._num_files

    def _read(self, index):
        rng = np.random.RandomState(index % self._num_files + (0 if self._split_name == "train" else 10_000))
        return draw_scene(rng, *self._size, self._num_classes)

    def __getitem__(self, index):
        rgb, x, gt = self._read(index)
        if self._gt_transform:
            gt = self._gt_transform_fn(gt)
        x = np.stack([x, x, x], axis=-1)
        if self.preprocess is not None:
            rgb, gt, x = self.preprocess(rgb, gt, x)
        return {"data": torch.from_numpy(np.ascontiguousarray(rgb)).float(),
                "label": torch.from_numpy(np.ascontiguousarray(gt)).long(),
                "modal_x": torch.from_numpy(np.ascontiguousarray(x)).float(),
                "fn": f"{self._split_name}_{index:04d}", "n": len(self)}

    @staticmethod
    def _gt_transform_fn(gt):
        return gt - 1  # uint8: 0 (unlabeled) -> 255


class TrainPre:
    """Random crop and flip, normalise, HWC -> CHW."""

    def __init__(self, crop, seed):
        self.crop = crop
        self.rng = np.random.RandomState(seed)

    def __call__(self, rgb, gt, x):
        ch, cw = self.crop
        h, w = gt.shape
        y0, x0 = self.rng.randint(0, h - ch + 1), self.rng.randint(0, w - cw + 1)
        rgb, gt, x = rgb[y0:y0 + ch, x0:x0 + cw], gt[y0:y0 + ch, x0:x0 + cw], x[y0:y0 + ch, x0:x0 + cw]
        if self.rng.rand() < 0.5:
            rgb, gt, x = rgb[:, ::-1], gt[:, ::-1], x[:, ::-1]
        return normalize(rgb).transpose(2, 0, 1), gt, normalize(x).transpose(2, 0, 1)


class ValPre:
    """Normalise and pad to a multiple of the network's stride: image with 0, label with
    the ignore value, so the padding never counts in the metrics."""

    def __init__(self, stride, ignore):
        self.stride = stride
        self.ignore = ignore

    def __call__(self, rgb, gt, x):
        h, w = gt.shape
        ph, pw = -h % self.stride, -w % self.stride
        rgb = np.pad(normalize(rgb), ((0, ph), (0, pw), (0, 0)))
        x = np.pad(normalize(x), ((0, ph), (0, pw), (0, 0)))
        gt = np.pad(gt.astype(np.int64), ((0, ph), (0, pw)), constant_values=self.ignore)
        return rgb.transpose(2, 0, 1), gt, x.transpose(2, 0, 1)


def get_train_loader(engine, dataset_cls, config, gt_transform=True):
    # the label files hold the dataset's classes, whatever the config says
    setting = {"gt_transform": gt_transform, "num_classes": len(config.class_names),
               "size": (config.image_height + 8, config.image_width + 8), "num_files": config.num_train_imgs}
    train_dataset = dataset_cls(setting, "train", TrainPre((config.image_height, config.image_width), config.seed),
                                config.batch_size * config.niters_per_epoch)
    train_sampler = None
    if engine.distributed:
        train_sampler = data.distributed.DistributedSampler(train_dataset)
    g = torch.Generator().manual_seed(config.seed)
    train_loader = data.DataLoader(train_dataset, batch_size=config.batch_size, num_workers=0,
                                   drop_last=True, shuffle=train_sampler is None, sampler=train_sampler,
                                   generator=g)
    return train_loader, train_sampler


def get_val_loader(engine, dataset_cls, config, gt_transform=True):
    # the label files hold the dataset's classes, whatever the config says
    setting = {"gt_transform": gt_transform, "num_classes": len(config.class_names),
               "size": (config.eval_height, config.eval_width), "num_files": config.num_eval_imgs}
    val_dataset = dataset_cls(setting, "val", ValPre(config.eval_stride, config.background))
    return data.DataLoader(val_dataset, batch_size=1, num_workers=0, shuffle=False), None

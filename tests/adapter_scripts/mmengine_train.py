"""A tiny mmengine ``Runner`` segmentation training laid out like mmsegmentation: samples are
``dict(inputs=[4, H, W], data_samples=SegDataSample(gt_sem_seg=PixelData(...)))``, batches
are pseudo-collated lists, the data preprocessor stacks them, the model's ``predict`` mode
returns data samples with ``seg_logits`` / ``pred_sem_seg``, and an ``IoUMetric``-like
evaluator reports ``mIoU`` in percent (mmseg's convention).  13 classes, ignore 255.

    python mmengine_train.py [--fault none|collapse] [--hook] [--epochs N]

``--hook`` registers ``SegwatchHook`` through ``custom_hooks`` by hand; without it the script is
unmodified and relies on ``adapter: auto``.  ``--fault collapse``: class weights loaded as a
one-hot vector (the model learns to predict class 0 everywhere).
"""
import argparse
import logging
import os
import sys
import tempfile
import warnings

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "faults"))
from _synth import SynthRGBD, seed_all  # noqa: E402

from mmengine.dataset import pseudo_collate  # noqa: E402
from mmengine.evaluator import BaseMetric, Evaluator  # noqa: E402
from mmengine.model import BaseModel, ImgDataPreprocessor  # noqa: E402
from mmengine.runner import Runner  # noqa: E402
from mmengine.structures import BaseDataElement, PixelData  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--fault", default="none", choices=["none", "collapse"])
p.add_argument("--hook", action="store_true")
p.add_argument("--epochs", type=int, default=4)
args = p.parse_args()
warnings.filterwarnings("ignore")

C = 13
IGNORE = 255


class SegDataSample(BaseDataElement):
    """mmseg's data sample: ``gt_sem_seg``, ``pred_sem_seg``, ``seg_logits`` (PixelData)."""


class SynthSeg(Dataset):
    def __init__(self, n, seed):
        self.ds = SynthRGBD(n, 32, C, seed=seed, ignore_value=IGNORE, style="tuple")

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        rgb, depth, label = self.ds[i]
        ds = SegDataSample(metainfo=dict(img_shape=tuple(label.shape), ori_shape=tuple(label.shape)))
        ds.gt_sem_seg = PixelData(data=label[None])
        return dict(inputs=torch.cat([rgb, depth], 0), data_samples=ds)


def conv_bn(i, o, s=1):
    return nn.Sequential(nn.Conv2d(i, o, 3, s, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True))


class EncoderDecoder(BaseModel):
    def __init__(self):
        super().__init__(data_preprocessor=ImgDataPreprocessor())
        self.backbone = nn.Sequential(conv_bn(4, 24), conv_bn(24, 24, 2), conv_bn(24, 24))
        self.decode_head = nn.Conv2d(24, C, 1)
        weight = None
        if args.fault == "collapse":
            weight = torch.zeros(C)   # BUG: inverse-frequency class weights loaded as one-hot
            weight[0] = 1.0
        self.loss_decode = nn.CrossEntropyLoss(weight=weight, ignore_index=IGNORE)

    def forward(self, inputs, data_samples=None, mode="tensor"):
        logits = F.interpolate(self.decode_head(self.backbone(inputs)), size=inputs.shape[-2:],
                               mode="bilinear", align_corners=False)
        if mode == "loss":
            gt = torch.stack([d.gt_sem_seg.data[0] for d in data_samples]).long()
            return dict(loss_ce=self.loss_decode(logits, gt))
        if mode == "predict":
            for d, lg in zip(data_samples, logits):
                d.seg_logits = PixelData(data=lg)
                d.pred_sem_seg = PixelData(data=lg.argmax(0, keepdim=True))
            return data_samples
        return logits


class IoUMetric(BaseMetric):
    """mmseg's IoUMetric in brief: intersections/unions per sample, mIoU = nanmean * 100."""

    def process(self, data_batch, data_samples):
        for d in data_samples:
            pred = d["pred_sem_seg"]["data"].squeeze()
            gt = d["gt_sem_seg"]["data"].squeeze().to(pred)
            keep = gt != IGNORE
            pred, gt = pred[keep], gt[keep]
            inter = torch.bincount(pred[pred == gt], minlength=C).double()
            area_p = torch.bincount(pred, minlength=C).double()
            area_g = torch.bincount(gt, minlength=C).double()
            self.results.append((inter, area_p + area_g - inter))

    def compute_metrics(self, results):
        inter = sum(r[0] for r in results)
        union = sum(r[1] for r in results)
        iou = (inter / union).numpy()
        return {"mIoU": round(float(np.nanmean(iou)) * 100, 2), "aAcc": 0.0}


def main():
    seed_all(0)
    if args.hook:
        import segwatch.adapters.mmseg as sw_mmseg  # the only segwatch line of the script
        sw_mmseg.SegwatchHook                       # registers SegwatchHook with mmengine's HOOKS
    work = tempfile.mkdtemp(prefix="mmengine_train_")
    g = torch.Generator().manual_seed(0)
    train = DataLoader(SynthSeg(128, 0), batch_size=8, shuffle=True, drop_last=True,
                       collate_fn=pseudo_collate, generator=g)
    val = DataLoader(SynthSeg(16, 1000), batch_size=8, shuffle=False, collate_fn=pseudo_collate)
    runner = Runner(model=EncoderDecoder(), work_dir=work, train_dataloader=train,
                    optim_wrapper=dict(optimizer=dict(type="Adam", lr=1e-2)),
                    train_cfg=dict(by_epoch=True, max_epochs=args.epochs, val_interval=1),
                    val_dataloader=val, val_cfg=dict(), val_evaluator=Evaluator(IoUMetric()),
                    default_hooks=dict(checkpoint=None, logger=dict(type="LoggerHook", interval=8)),
                    custom_hooks=[dict(type="SegwatchHook")] if args.hook else None,
                    log_level="WARNING", randomness=dict(seed=0), env_cfg=dict(cudnn_benchmark=False))
    runner.train()
    print("hooks:", ",".join(type(h).__name__ for h in runner.hooks), flush=True)


if __name__ == "__main__":
    main()

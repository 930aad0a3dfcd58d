"""A training in the shape of DFormer's ``utils/train.py`` (RGB-D semantic segmentation),
scaled down to run on a CPU in seconds.  It knows nothing about segwatch.

- an ``Engine`` reads ``LOCAL_RANK``; the loader is driven by ``niters_per_epoch`` calls of
  ``next()`` on an iterator made at the start of each epoch;
- the LR is computed by a warm-up + poly policy and written into the param groups *after*
  ``optimizer.step()`` (so the very first step runs at the base LR, as in DFormer);
- labels are uint8 PNG-style maps shifted ``gt - 1`` (0 = unlabeled -> 255, the ignore);
- evaluation on 53x73 images padded to a multiple of 8 (image 0, label 255) with a
  ``Metrics`` class holding its own hist; the mIoU is printed twice (logger and print).

``--fault no_gt_shift``: the dataset forgets the ``gt - 1`` shift, so labels run 0..C for a
C-class head (unlabeled becomes wall, class C is out of range and CE crashes on it):
segwatch must raise label.out_of_range.

``--fault num_classes_13``: the config's ``num_classes`` is left at 13 from another dataset
(as a 40-class NYUv2 config used for 37-class SUNRGBD): the head and the Metrics are built
for 13 classes, three of them phantoms; training runs.  segwatch, told the dataset has 10
classes, must raise config.num_classes_mismatch.
"""
import argparse
import logging
import random
import time

import numpy as np
import torch
import torch.nn as nn

from config import C as config
from dataloader import RGBXDataset, get_train_loader, get_val_loader
from engine import Engine
from lr_policy import WarmUpPolyLR
from metrics import Metrics
from model import EncoderDecoder, group_weight

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
logger = logging.getLogger("dformer")

parser = argparse.ArgumentParser()
parser.add_argument("--fault", default="none", choices=["none", "no_gt_shift", "num_classes_13"])
parser.add_argument("--epochs", type=int, default=config.nepochs)


@torch.no_grad()
def evaluate(model, dataloader, config, device, engine):
    model.eval()
    n_classes = config.num_classes
    metrics = Metrics(n_classes, config.background, device)
    for minibatch in dataloader:
        images = minibatch["data"].to(device)
        labels = minibatch["label"].to(device)
        modal_xs = minibatch["modal_x"].to(device)
        preds = model(images, modal_xs).softmax(dim=1)
        metrics.update(preds, labels)
    return metrics


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(1)


with Engine(custom_parser=parser) as engine:
    args = parser.parse_args()
    set_seed(config.seed + engine.local_rank)
    if args.fault == "num_classes_13":
        config.num_classes = 13  # left over from another dataset's config
    device = torch.device("cpu")
    gt_transform = args.fault != "no_gt_shift"
    train_loader, train_sampler = get_train_loader(engine, RGBXDataset, config, gt_transform)
    val_loader, val_sampler = get_val_loader(engine, RGBXDataset, config, gt_transform)

    criterion = nn.CrossEntropyLoss(reduction="none", ignore_index=config.background)
    model = EncoderDecoder(cfg=config, criterion=criterion)
    base_lr = config.lr
    optimizer = torch.optim.AdamW(group_weight(model, base_lr, config.weight_decay), lr=base_lr,
                                  betas=(0.9, 0.999), weight_decay=config.weight_decay)
    total_iteration = args.epochs * config.niters_per_epoch
    lr_policy = WarmUpPolyLR(base_lr, config.lr_power, total_iteration,
                             config.niters_per_epoch * config.warm_up_epoch)
    engine.register_state(model=model, optimizer=optimizer)
    model.to(device)
    logger.info("begin training: %d epochs x %d iters, local rank %d", args.epochs,
                config.niters_per_epoch, engine.local_rank)

    best_miou = 0.0
    t0 = time.time()
    for epoch in range(engine.state.epoch, args.epochs + 1):
        model.train()
        if engine.distributed:
            train_sampler.set_epoch(epoch)
        dataloader = iter(train_loader)
        sum_loss = 0.0
        for idx in range(config.niters_per_epoch):
            engine.update_iteration(epoch, idx)
            minibatch = next(dataloader)
            imgs = minibatch["data"].to(device)
            gts = minibatch["label"].to(device)
            modal_xs = minibatch["modal_x"].to(device)
            loss = model(imgs, modal_xs, gts)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

            current_idx = (epoch - 1) * config.niters_per_epoch + idx
            lr = lr_policy.get_lr(current_idx)
            for i in range(len(optimizer.param_groups)):
                optimizer.param_groups[i]["lr"] = lr
            sum_loss += loss.item()
            if (idx + 1) % 4 == 0:
                print(f"Epoch {epoch}/{args.epochs} Iter {idx + 1}/{config.niters_per_epoch}: "
                      f"lr={lr:.4e} loss={loss.item():.4f} total_loss={sum_loss / (idx + 1):.4f}", flush=True)
        all_metrics = evaluate(model, val_loader, config, device, engine)
        ious, miou = all_metrics.compute_iou()
        acc = all_metrics.compute_pixel_acc()
        if miou > best_miou:
            best_miou = miou
        logger.info(f"Epoch {epoch} validation result: mIoU {miou}, best mIoU {best_miou}, acc {acc}")
        print("miou", miou, "best", best_miou, flush=True)
    print(f"done in {time.time() - t0:.1f}s", flush=True)

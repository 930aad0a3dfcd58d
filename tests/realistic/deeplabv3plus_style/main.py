"""A training in the shape of VainF/DeepLabV3Plus-Pytorch's ``main.py`` (Cityscapes branch),
scaled down to a CPU test.  It knows nothing about segwatch.

- options spelled as there (``--total_itrs``, ``--val_interval``, ``--crop_size``...); the
  loop is ``while True`` over epochs counting ``cur_itrs``, validating every
  ``val_interval`` iterations and returning at ``total_itrs``;
- the model is wrapped in ``nn.DataParallel``; SGD with the backbone at 0.1x the LR;
  ``PolyLR`` (with its ``min_lr`` floor) stepped every iteration;
- ``nn.CrossEntropyLoss(ignore_index=255)``; labels are Cityscapes raw ids mapped to the 19
  train ids by ``Cityscapes.encode_target`` (void -> 255);
- ``validate`` feeds numpy arrays to ``StreamSegMetrics`` and the script prints
  ``metrics.to_str(val_score)``: ``Mean IoU: 0.xxxxxx``, a fraction, averaged over the
  classes present (nanmean), not over all 19.

``--fault no_train_id``: ``encode_target`` is skipped, so raw label ids (0..33) reach a
19-class CE: segwatch must name the out-of-range labels before CE crashes on them.
``--fault no_ignore``: the criterion is ``nn.CrossEntropyLoss()`` (ignore_index -100), so
the void pixels (255) are targets: segwatch must name the mismatch before CE crashes.
"""
import argparse
import os
import random

import numpy as np
import torch
import torch.nn as nn
from torch.utils import data

import ext_transforms as et
import network
from cityscapes import Cityscapes, write_fake_cityscapes
from stream_metrics import StreamSegMetrics


class PolyLR(torch.optim.lr_scheduler._LRScheduler):
    def __init__(self, optimizer, max_iters, power=0.9, last_epoch=-1, min_lr=1e-6):
        self.power, self.max_iters, self.min_lr = power, max_iters, min_lr
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        return [max(base_lr * (1 - self.last_epoch / self.max_iters) ** self.power, self.min_lr)
                for base_lr in self.base_lrs]


def get_argparser():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data_root", type=str, default="./datasets/data")
    parser.add_argument("--dataset", type=str, default="cityscapes", choices=["cityscapes"])
    parser.add_argument("--num_classes", type=int, default=None)
    parser.add_argument("--model", type=str, default="deeplabv3plus_tiny")
    parser.add_argument("--output_stride", type=int, default=16, choices=[8, 16])
    parser.add_argument("--total_itrs", type=int, default=96)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--val_batch_size", type=int, default=4)
    parser.add_argument("--crop_size", type=int, default=64)
    parser.add_argument("--weight_decay", type=float, default=1e-4)
    parser.add_argument("--random_seed", type=int, default=1)
    parser.add_argument("--print_interval", type=int, default=10)
    parser.add_argument("--val_interval", type=int, default=32)
    parser.add_argument("--num_workers", type=int, default=0)
    parser.add_argument("--fault", default="none", choices=["none", "no_train_id", "no_ignore"])
    return parser


def get_dataset(opts):
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    train_transform = et.ExtCompose([
        et.ExtRandomCrop(size=(opts.crop_size, opts.crop_size)),
        et.ExtRandomHorizontalFlip(),
        et.ExtToTensor(),
        et.ExtNormalize(mean=mean, std=std),
    ])
    val_transform = et.ExtCompose([et.ExtToTensor(), et.ExtNormalize(mean=mean, std=std)])
    return (Cityscapes(root=opts.data_root, split="train", transform=train_transform),
            Cityscapes(root=opts.data_root, split="val", transform=val_transform))


def validate(opts, model, loader, device, metrics):
    metrics.reset()
    with torch.no_grad():
        for images, labels in loader:
            images = images.to(device, dtype=torch.float32)
            labels = labels.to(device, dtype=torch.long)
            outputs = model(images)
            preds = outputs.detach().max(dim=1)[1].cpu().numpy()
            metrics.update(labels.cpu().numpy(), preds)
        score = metrics.get_results()
    return score


def main():
    opts = get_argparser().parse_args()
    opts.num_classes = 19
    Cityscapes.FAULT = opts.fault
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print("Device: %s" % device)
    torch.manual_seed(opts.random_seed)
    np.random.seed(opts.random_seed)
    random.seed(opts.random_seed)
    torch.set_num_threads(1)

    if not os.path.isdir(os.path.join(opts.data_root, "gtFine")):
        write_fake_cityscapes(opts.data_root)
    train_dst, val_dst = get_dataset(opts)
    train_loader = data.DataLoader(train_dst, batch_size=opts.batch_size, shuffle=True,
                                   num_workers=opts.num_workers, drop_last=True)
    val_loader = data.DataLoader(val_dst, batch_size=opts.val_batch_size, shuffle=True,
                                 num_workers=opts.num_workers)
    print("Dataset: %s, Train set: %d, Val set: %d" % (opts.dataset, len(train_dst), len(val_dst)))

    model = network.__dict__[opts.model](num_classes=opts.num_classes, output_stride=opts.output_stride)
    network.set_bn_momentum(model.backbone, momentum=0.01)
    metrics = StreamSegMetrics(opts.num_classes)
    optimizer = torch.optim.SGD(params=[
        {"params": model.backbone.parameters(), "lr": 0.1 * opts.lr},
        {"params": model.classifier.parameters(), "lr": opts.lr},
    ], lr=opts.lr, momentum=0.9, weight_decay=opts.weight_decay)
    scheduler = PolyLR(optimizer, opts.total_itrs, power=0.9)
    criterion = nn.CrossEntropyLoss(ignore_index=255, reduction="mean")
    if opts.fault == "no_ignore":
        criterion = nn.CrossEntropyLoss(reduction="mean")

    print("[!] Retrain")
    model = nn.DataParallel(model)
    model.to(device)

    best_score, cur_itrs, cur_epochs, interval_loss = 0.0, 0, 0, 0.0
    while True:
        model.train()
        cur_epochs += 1
        for images, labels in train_loader:
            cur_itrs += 1
            images = images.to(device, dtype=torch.float32)
            labels = labels.to(device, dtype=torch.long)

            optimizer.zero_grad()
            outputs = model(images)
            loss = criterion(outputs, labels)
            loss.backward()
            optimizer.step()

            interval_loss += loss.detach().cpu().numpy()
            if cur_itrs % opts.print_interval == 0:
                print("Epoch %d, Itrs %d/%d, Loss=%f" % (cur_epochs, cur_itrs, opts.total_itrs,
                                                         interval_loss / opts.print_interval))
                interval_loss = 0.0

            if cur_itrs % opts.val_interval == 0:
                print("validation...")
                model.eval()
                val_score = validate(opts, model, val_loader, device, metrics)
                print(metrics.to_str(val_score), flush=True)
                best_score = max(best_score, val_score["Mean IoU"])
                model.train()
            scheduler.step()

            if cur_itrs >= opts.total_itrs:
                return


if __name__ == "__main__":
    main()

"""A training in the shape of torchvision's ``references/segmentation/train.py``, scaled
down to a CPU test, without importing torchvision (its CUDA-only build does not load here).
It knows nothing about segwatch.

- the model returns ``{'out': ..., 'aux': ...}``; ``--aux-loss`` adds the FCN auxiliary
  head and the criterion sums ``losses['out'] + 0.5 * losses['aux']`` (CE, ignore 255: the
  VOC-style object borders);
- SGD with the aux head's params at 10x the LR; the LR warms up (LinearLR) and decays to 0
  (PolynomialLR), chained by SequentialLR and stepped every iteration;
- after each epoch ``evaluate`` builds a ``ConfusionMatrix`` and prints it: global
  correct, per-class IoU, ``mean IoU``.

``--fault eval_mode``: ``train_one_epoch`` no longer calls ``model.train()`` (it is called
once, before the first epoch), so from the first evaluation on the network trains in eval
mode (BatchNorm on running statistics, dropout off): segwatch must raise
model.eval_mode_in_training.

``--fault no_ignore_index``: the criterion calls ``cross_entropy(x, target)`` without
``ignore_index=255``, so the VOC borders (255) are targets of an 8-class head and CE
crashes on them: segwatch must name the 255s before that (label.ignore_mismatch or
label.out_of_range).
"""
import argparse
import datetime
import os
import time

import torch
import torch.nn as nn
from torch.optim.lr_scheduler import LinearLR, PolynomialLR, SequentialLR

import utils
from data import VOCLike
from model import deeplabv3_tiny

FAULT = "none"
CLASSES = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car"]


def get_dataset(image_set, num_classes):
    if image_set == "train":
        return VOCLike(96, 40, num_classes, seed=0, crop=32)
    return VOCLike(8, 40, num_classes, seed=100)


def criterion(inputs, target):
    losses = {}
    for name, x in inputs.items():
        losses[name] = nn.functional.cross_entropy(x, target, ignore_index=255)
        if FAULT == "no_ignore_index":
            losses[name] = nn.functional.cross_entropy(x, target)  # the 255 borders become targets
    if len(losses) == 1:
        return losses["out"]
    return losses["out"] + 0.5 * losses["aux"]


def evaluate(model, data_loader, device, num_classes):
    model.eval()
    confmat = utils.ConfusionMatrix(num_classes)
    metric_logger = utils.MetricLogger(delimiter="  ")
    with torch.inference_mode():
        for image, target in metric_logger.log_every(data_loader, 100, "Test:"):
            image, target = image.to(device), target.to(device)
            output = model(image)
            output = output["out"]
            confmat.update(target.flatten(), output.argmax(1).flatten())
        confmat.reduce_from_all_processes()
    return confmat


def train_one_epoch(model, criterion, optimizer, data_loader, lr_scheduler, device, epoch, print_freq, fault):
    if fault != "eval_mode":
        model.train()
    metric_logger = utils.MetricLogger(delimiter="  ")
    header = f"Epoch: [{epoch}]"
    for image, target in metric_logger.log_every(data_loader, print_freq, header):
        image, target = image.to(device), target.to(device)
        output = model(image)
        loss = criterion(output, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        lr_scheduler.step()
        metric_logger.update(loss=loss.item(), lr=optimizer.param_groups[0]["lr"])


def main(args):
    global FAULT
    FAULT = args.fault
    if args.output_dir:
        os.makedirs(args.output_dir, exist_ok=True)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    device = torch.device(args.device)
    num_classes = len(CLASSES)
    dataset, dataset_test = get_dataset("train", num_classes), get_dataset("val", num_classes)
    g = torch.Generator().manual_seed(0)
    data_loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True,
                                              num_workers=args.workers, drop_last=True, generator=g)
    data_loader_test = torch.utils.data.DataLoader(dataset_test, batch_size=1, num_workers=args.workers)

    model = deeplabv3_tiny(num_classes=num_classes, aux_loss=args.aux_loss)
    model.to(device)
    if args.fault == "eval_mode":
        model.train()  # once, before the loop: the evaluation's model.eval() then stays

    params_to_optimize = [
        {"params": [p for p in model.backbone.parameters() if p.requires_grad]},
        {"params": [p for p in model.classifier.parameters() if p.requires_grad]},
    ]
    if args.aux_loss:
        params = [p for p in model.aux_classifier.parameters() if p.requires_grad]
        params_to_optimize.append({"params": params, "lr": args.lr * 10})
    optimizer = torch.optim.SGD(params_to_optimize, lr=args.lr, momentum=args.momentum,
                                weight_decay=args.weight_decay)

    iters_per_epoch = len(data_loader)
    main_lr_scheduler = PolynomialLR(optimizer, total_iters=iters_per_epoch * (args.epochs - args.lr_warmup_epochs),
                                     power=0.9)
    if args.lr_warmup_epochs > 0:
        warmup_iters = iters_per_epoch * args.lr_warmup_epochs
        if args.lr_warmup_method != "linear":
            raise RuntimeError(f"Invalid warmup lr method '{args.lr_warmup_method}'. Only linear is supported.")
        warmup_lr_scheduler = LinearLR(optimizer, start_factor=args.lr_warmup_decay, total_iters=warmup_iters)
        lr_scheduler = SequentialLR(optimizer, schedulers=[warmup_lr_scheduler, main_lr_scheduler],
                                    milestones=[warmup_iters])
    else:
        lr_scheduler = main_lr_scheduler

    start_time = time.time()
    for epoch in range(args.epochs):
        train_one_epoch(model, criterion, optimizer, data_loader, lr_scheduler, device, epoch, args.print_freq,
                        args.fault)
        confmat = evaluate(model, data_loader_test, device=device, num_classes=num_classes)
        print(confmat, flush=True)
    total_time_str = str(datetime.timedelta(seconds=int(time.time() - start_time)))
    print(f"Training time {total_time_str}")


def get_args_parser():
    parser = argparse.ArgumentParser(description="PyTorch Segmentation Training (tiny)")
    parser.add_argument("--data-path", default="", type=str, help="unused: the data is drawn in memory")
    parser.add_argument("--dataset", default="voc", type=str)
    parser.add_argument("--model", default="deeplabv3_tiny", type=str)
    parser.add_argument("--aux-loss", action="store_true", help="auxiliary loss")
    parser.add_argument("--device", default="cpu", type=str)
    parser.add_argument("-b", "--batch-size", default=8, type=int)
    parser.add_argument("--epochs", default=4, type=int, metavar="N")
    parser.add_argument("-j", "--workers", default=0, type=int, metavar="N")
    parser.add_argument("--lr", default=0.02, type=float, help="initial learning rate")
    parser.add_argument("--momentum", default=0.9, type=float, metavar="M")
    parser.add_argument("--wd", "--weight-decay", default=1e-4, type=float, metavar="W", dest="weight_decay")
    parser.add_argument("--lr-warmup-epochs", default=0, type=int)
    parser.add_argument("--lr-warmup-method", default="linear", type=str)
    parser.add_argument("--lr-warmup-decay", default=0.01, type=float)
    parser.add_argument("--print-freq", default=4, type=int)
    parser.add_argument("--output-dir", default="", type=str)
    parser.add_argument("--fault", default="none", choices=["none", "eval_mode", "no_ignore_index"])
    return parser


if __name__ == "__main__":
    main(get_args_parser().parse_args())

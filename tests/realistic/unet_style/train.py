"""A training in the shape of milesial/Pytorch-UNet's ``train.py``, scaled down to a CPU
test (22 images of 16x16 after scaling, one epoch of 10 steps; the model keeps its full ~31M parameters).  It knows
nothing about segwatch.

- argparse: --epochs --batch-size --learning-rate --scale --validation --amp --bilinear
  --classes; RMSprop (momentum 0.999), ReduceLROnPlateau on the validation Dice, a
  GradScaler, gradient clipping, CE + Dice loss, tqdm progress bars;
- validation five times per epoch; it prints the Dice score, never an mIoU.

The fault is the command line: ``--learning-rate 1e-2`` (x1000 the default 1e-5) makes
RMSprop blow the network up within a couple of steps: it predicts one class from then on,
and segwatch must raise pred.collapse.
"""
import argparse
import logging

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import optim
from torch.utils.data import DataLoader, random_split
from tqdm import tqdm

from data_loading import BasicDataset
from dice_score import dice_loss
from evaluate import evaluate
from unet import UNet


def train_model(model, device, epochs=5, batch_size=1, learning_rate=1e-5, val_percent=0.1,
                img_scale=0.5, amp=False, weight_decay=1e-8, momentum=0.999, gradient_clipping=1.0):
    dataset = BasicDataset(22, size=32, scale=img_scale)
    n_val = int(len(dataset) * val_percent)
    n_train = len(dataset) - n_val
    train_set, val_set = random_split(dataset, [n_train, n_val], generator=torch.Generator().manual_seed(0))
    loader_args = dict(batch_size=batch_size, num_workers=0)
    train_loader = DataLoader(train_set, shuffle=True, **loader_args)
    val_loader = DataLoader(val_set, shuffle=False, drop_last=True, **loader_args)

    logging.info(f"""Starting training:
        Epochs:          {epochs}
        Batch size:      {batch_size}
        Learning rate:   {learning_rate}
        Training size:   {n_train}
        Validation size: {n_val}
        Device:          {device.type}
        Images scaling:  {img_scale}
        Mixed Precision: {amp}
    """)

    optimizer = optim.RMSprop(model.parameters(), lr=learning_rate, weight_decay=weight_decay,
                              momentum=momentum, foreach=True)
    scheduler = optim.lr_scheduler.ReduceLROnPlateau(optimizer, "max", patience=5)
    grad_scaler = torch.amp.GradScaler(device.type, enabled=amp)
    criterion = nn.CrossEntropyLoss() if model.n_classes > 1 else nn.BCEWithLogitsLoss()
    global_step = 0

    for epoch in range(1, epochs + 1):
        model.train()
        epoch_loss = 0
        with tqdm(total=n_train, desc=f"Epoch {epoch}/{epochs}", unit="img") as pbar:
            for batch in train_loader:
                images, true_masks = batch["image"], batch["mask"]
                assert images.shape[1] == model.n_channels, \
                    f"Network has been defined with {model.n_channels} input channels, " \
                    f"but loaded images have {images.shape[1]} channels."
                images = images.to(device=device, dtype=torch.float32, memory_format=torch.channels_last)
                true_masks = true_masks.to(device=device, dtype=torch.long)

                with torch.autocast(device.type, enabled=amp):
                    masks_pred = model(images)
                    loss = criterion(masks_pred, true_masks)
                    loss += dice_loss(F.softmax(masks_pred, dim=1).float(),
                                      F.one_hot(true_masks, model.n_classes).permute(0, 3, 1, 2).float())

                optimizer.zero_grad(set_to_none=True)
                grad_scaler.scale(loss).backward()
                grad_scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), gradient_clipping)
                grad_scaler.step(optimizer)
                grad_scaler.update()

                pbar.update(images.shape[0])
                global_step += 1
                epoch_loss += loss.item()
                pbar.set_postfix(**{"loss (batch)": loss.item()})

                division_step = n_train // (5 * batch_size)
                if division_step > 0 and global_step % division_step == 0:
                    val_score = evaluate(model, val_loader, device, amp)
                    scheduler.step(val_score)
                    logging.info(f"Validation Dice score: {val_score:.4f}")


def get_args():
    parser = argparse.ArgumentParser(description="Train the UNet on images and target masks")
    parser.add_argument("--epochs", "-e", metavar="E", type=int, default=1, help="Number of epochs")
    parser.add_argument("--batch-size", "-b", dest="batch_size", metavar="B", type=int, default=2, help="Batch size")
    parser.add_argument("--learning-rate", "-l", metavar="LR", type=float, default=1e-5,
                        help="Learning rate", dest="lr")
    parser.add_argument("--scale", "-s", type=float, default=0.5, help="Downscaling factor of the images")
    parser.add_argument("--validation", "-v", dest="val", type=float, default=10.0,
                        help="Percent of the data that is used as validation (0-100)")
    parser.add_argument("--amp", action="store_true", default=False, help="Use mixed precision")
    parser.add_argument("--bilinear", action="store_true", default=False, help="Use bilinear upsampling")
    parser.add_argument("--classes", "-c", type=int, default=2, help="Number of classes")
    return parser.parse_args()


if __name__ == "__main__":
    args = get_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    torch.manual_seed(0)
    torch.set_num_threads(1)
    device = torch.device("cpu")
    logging.info(f"Using device {device}")
    model = UNet(n_channels=3, n_classes=args.classes, bilinear=args.bilinear)
    model = model.to(memory_format=torch.channels_last)
    logging.info(f"Network:\n\t{model.n_channels} input channels\n\t{model.n_classes} output channels (classes)\n"
                 f"\t{'Bilinear' if model.bilinear else 'Transposed conv'} upscaling\n"
                 f"\t{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters")
    model.to(device=device)
    train_model(model=model, epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
                device=device, img_scale=args.scale, val_percent=args.val / 100, amp=args.amp)

"""Healthy training, DFormer style: dict batches {'data', 'modal_x', 'label'}, an RGB
branch and a depth branch, ``model(rgb, depth, label=gt)`` returns the loss in training
and the logits in eval.  The decode head (``decode_head.conv_seg``) predicts at half
resolution and the model upsamples to the input size, so the logits are hidden from the
root call during training.  13 classes, ignore -1.

Expected findings: none at error level.  FAULT_STEP = 0 (no fault).
"""
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from _synth import loaders, seed_all

FAULT_STEP = 0
NUM_CLASSES = 13


def conv_bn(i, o, s=1):
    return nn.Sequential(nn.Conv2d(i, o, 3, s, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True))


class DualEncoder(nn.Module):
    def __init__(self, w=24):
        super().__init__()
        self.rgb_stem = nn.Sequential(conv_bn(3, w), conv_bn(w, w, 2))
        self.x_stem = nn.Sequential(conv_bn(1, w // 2), conv_bn(w // 2, w // 2, 2))
        self.fuse = conv_bn(w + w // 2, w)

    def forward(self, rgb, x):
        return self.fuse(torch.cat([self.rgb_stem(rgb), self.x_stem(x)], 1))


class DecodeHead(nn.Module):
    def __init__(self, w, num_classes):
        super().__init__()
        self.squeeze = conv_bn(w, w)
        self.dropout = nn.Dropout2d(0.1)
        self.conv_seg = nn.Conv2d(w, num_classes, 1)

    def forward(self, feat):
        return self.conv_seg(self.dropout(self.squeeze(feat)))


class EncoderDecoder(nn.Module):
    def __init__(self, num_classes, criterion):
        super().__init__()
        self.backbone = DualEncoder(24)
        self.decode_head = DecodeHead(24, num_classes)
        self.criterion = criterion

    def encode_decode(self, rgb, modal_x):
        out = self.decode_head(self.backbone(rgb, modal_x))
        return F.interpolate(out, size=rgb.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, rgb, modal_x=None, label=None):
        out = self.encode_decode(rgb, modal_x)
        if label is not None:
            return self.criterion(out, label.long())
        return out


@torch.no_grad()
def evaluate(model, loader):
    model.eval()
    hist = torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=torch.long)
    for minibatch in loader:
        imgs, modal_xs, gts = minibatch["data"], minibatch["modal_x"], minibatch["label"]
        preds = model(imgs, modal_xs).softmax(dim=1).argmax(dim=1)
        k = (gts >= 0) & (gts < NUM_CLASSES)
        hist += torch.bincount(NUM_CLASSES * gts[k] + preds[k], minlength=NUM_CLASSES ** 2).view(NUM_CLASSES, NUM_CLASSES)
    iou = hist.diag() / (hist.sum(0) + hist.sum(1) - hist.diag())
    iou[iou.isnan()] = 0.0
    model.train()
    return iou.mean().item() * 100


def main():
    seed_all(0)
    train_loader, val_loader = loaders(NUM_CLASSES, style="dict")
    criterion = nn.CrossEntropyLoss(reduction="mean", ignore_index=-1)
    model = EncoderDecoder(NUM_CLASSES, criterion)
    optimizer = torch.optim.AdamW(model.parameters(), lr=6e-3, weight_decay=0.01)
    epochs = 5
    total = epochs * len(train_loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: (1 - i / (total + 1)) ** 0.9)
    it = 0
    t0 = time.time()
    for epoch in range(1, epochs + 1):
        model.train()
        sum_loss = 0.0
        for idx, minibatch in enumerate(train_loader):
            it += 1
            imgs = minibatch["data"]
            gts = minibatch["label"]
            modal_xs = minibatch["modal_x"]
            loss = model(imgs, modal_xs, label=gts)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            sum_loss += loss.item()
            if it % 10 == 0:
                print(f"Epoch {epoch}/{epochs} Iter {idx + 1}/{len(train_loader)}: "
                      f"lr={optimizer.param_groups[0]['lr']:.4e} loss={loss.item():.4f} "
                      f"total_loss={sum_loss / (idx + 1):.4f}", flush=True)
        miou = evaluate(model, val_loader)
        print(f"epoch {epoch}: mIoU: {miou:.2f}", flush=True)
    print(f"done in {time.time() - t0:.1f}s", flush=True)


if __name__ == "__main__":
    main()

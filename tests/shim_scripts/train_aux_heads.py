"""A tiny training whose model has an auxiliary head computed after the main one.

--style mmseg:   the model returns a dict of losses (main, then the 0.4-weighted auxiliary head
                 ``auxiliary_head.conv_seg``); the training sums them.
--style tv:      torchvision: returns {'out': upsampled classifier, 'aux': upsampled aux_classifier}.
--style unnamed: the auxiliary head has no aux* name (``side``), computed last; the model returns
                 the main logits only, the side loss goes through an attribute.
--style single:  one head (the reference: discovery unchanged).
"""
import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

p = argparse.ArgumentParser()
p.add_argument("--style", default="mmseg")
p.add_argument("--steps", type=int, default=4)
args = p.parse_args()
torch.manual_seed(0)
torch.set_num_threads(1)
C, S, B = 5, 32, 2


class Head(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.conv = nn.Conv2d(cin, 16, 3, padding=1)
        self.conv_seg = nn.Conv2d(16, C, 1)

    def forward(self, x):
        return self.conv_seg(F.relu(self.conv(x)))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU())
        self.deep = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU())
        self.decode_head = Head(16)
        if args.style == "mmseg":
            self.auxiliary_head = Head(16)
        elif args.style == "tv":
            self.aux_classifier = Head(16)
        elif args.style == "unnamed":
            self.side = Head(16)
        self.side_out = None

    def forward(self, img, label=None):
        f1 = self.stem(img)
        f2 = self.deep(f1)
        main = F.interpolate(self.decode_head(f2), size=img.shape[-2:], mode="bilinear")
        if args.style == "mmseg":
            # mmseg: decode_head.loss() then auxiliary_head.loss(); conv_seg is the only call
            aux = F.interpolate(self.auxiliary_head(f1), size=img.shape[-2:], mode="bilinear")
            return {"decode.loss_ce": F.cross_entropy(main, label),
                    "aux.loss_ce": 0.4 * F.cross_entropy(aux, label)}
        if args.style == "tv":
            aux = F.interpolate(self.aux_classifier(f1), size=img.shape[-2:], mode="bilinear")
            return {"out": main, "aux": aux}
        if args.style == "unnamed":
            self.side_out = F.interpolate(self.side(f1), size=img.shape[-2:], mode="bilinear")
        return main


g = torch.Generator().manual_seed(1)
labels = torch.randint(0, C, (args.steps * B, S, S), generator=g)
images = torch.stack([labels.float() / C, (labels % 2).float(), torch.rand(labels.shape, generator=g)], 1)
model = Net()
opt = torch.optim.SGD(model.parameters(), lr=0.05)
for img, lab in DataLoader(TensorDataset(images, labels), batch_size=B):
    if args.style == "mmseg":
        loss = sum(model(img, lab).values())
    elif args.style == "tv":
        out = model(img)
        loss = F.cross_entropy(out["out"], lab) + 0.4 * F.cross_entropy(out["aux"], lab)
    else:
        loss = F.cross_entropy(model(img), lab)
        if model.side_out is not None:
            loss = loss + 0.4 * F.cross_entropy(model.side_out, lab)
    opt.zero_grad()
    loss.backward()
    opt.step()

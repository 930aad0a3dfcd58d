"""An RGB-D ``EncoderDecoder`` in the shape of DFormer's ``models/builder.py``: a two-branch
encoder (RGB and depth, fused), a decode head whose last layer is ``decode_head.conv_seg``,
logits upsampled to the input size, and the loss computed inside ``forward`` when a label
is given (per-pixel CE, then the mean over the non-ignored pixels)."""
import torch
import torch.nn as nn
import torch.nn.functional as F


def conv_bn(i, o, s=1):
    return nn.Sequential(nn.Conv2d(i, o, 3, s, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True))


class DualBranchEncoder(nn.Module):
    def __init__(self, w=24):
        super().__init__()
        self.rgb = nn.Sequential(conv_bn(3, w), conv_bn(w, w, 2), conv_bn(w, w))
        self.depth = nn.Sequential(conv_bn(3, w // 2), conv_bn(w // 2, w // 2, 2))
        self.fuse = nn.Sequential(conv_bn(w + w // 2, w * 2), conv_bn(w * 2, w * 2, 2), conv_bn(w * 2, w * 2))

    def forward(self, rgb, x):
        return self.fuse(torch.cat([self.rgb(rgb), self.depth(x)], 1))


class DecodeHead(nn.Module):
    def __init__(self, in_ch, ch, num_classes):
        super().__init__()
        self.squeeze = conv_bn(in_ch, ch)
        self.dropout = nn.Dropout2d(0.1)
        self.conv_seg = nn.Conv2d(ch, num_classes, 1)

    def forward(self, feat):
        return self.conv_seg(self.dropout(self.squeeze(feat)))


class EncoderDecoder(nn.Module):
    def __init__(self, cfg, criterion=nn.CrossEntropyLoss(reduction="none", ignore_index=255)):
        super().__init__()
        self.cfg = cfg
        self.backbone = DualBranchEncoder(24)
        self.decode_head = DecodeHead(48, 48, cfg.num_classes)
        self.criterion = criterion

    def encode_decode(self, rgb, modal_x):
        out = self.decode_head(self.backbone(rgb, modal_x))
        return F.interpolate(out, size=rgb.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, rgb, modal_x=None, label=None):
        out = self.encode_decode(rgb, modal_x)
        if label is not None:
            loss = self.criterion(out, label.long())[label.long() != self.cfg.background]
            return loss.mean()
        return out


def group_weight(module, lr, weight_decay):
    """AdamW groups as DFormer builds them: no weight decay on norms and biases."""
    decay, no_decay = [], []
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            decay.append(m.weight)
            if m.bias is not None:
                no_decay.append(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            no_decay += [p for p in (m.weight, m.bias) if p is not None]
    return [{"params": decay, "lr": lr, "weight_decay": weight_decay},
            {"params": no_decay, "lr": lr, "weight_decay": 0.0}]

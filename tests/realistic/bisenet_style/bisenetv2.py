"""A tiny BiSeNetV2 in the shape of CoinCheung/BiSeNet's ``lib/models/bisenetv2.py``: a
detail branch (wide, shallow, stride 8), a semantic branch (narrow, deep, stride 32) whose
intermediate features also feed four auxiliary ``SegmentHead``s, a guided aggregation
(``BGALayer``) and the main ``head``.  ``aux_mode='train'`` returns the 5-tuple
``(logits, aux2, aux3, aux4, aux5_4)``, ``'eval'`` the 1-tuple ``(logits,)``; every head
upsamples to the input size.  ``get_params`` splits wd / no-wd and the heads' 10x-LR groups."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class ConvBNReLU(nn.Module):
    def __init__(self, cin, cout, ks=3, stride=1, groups=1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, ks, stride, ks // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)))


class DetailBranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.S1 = nn.Sequential(ConvBNReLU(3, 16, stride=2), ConvBNReLU(16, 16))
        self.S2 = nn.Sequential(ConvBNReLU(16, 24, stride=2), ConvBNReLU(24, 24))
        self.S3 = nn.Sequential(ConvBNReLU(24, 32, stride=2), ConvBNReLU(32, 32))

    def forward(self, x):
        return self.S3(self.S2(self.S1(x)))


class GELayer(nn.Module):
    """Gather-and-expand: depthwise conv in an expanded space, residual when shapes allow."""

    def __init__(self, cin, cout, stride=1, exp=2):
        super().__init__()
        mid = cin * exp
        self.conv1 = ConvBNReLU(cin, cin)
        self.dwconv = nn.Sequential(nn.Conv2d(cin, mid, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(mid))
        self.conv2 = nn.Sequential(nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.conv2[1].last_bn = True
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        feat = self.conv2(self.dwconv(self.conv1(x)))
        return self.relu(feat + (x if self.shortcut is None else self.shortcut(x)))


class SegmentBranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.S1S2 = nn.Sequential(ConvBNReLU(3, 8, stride=2), ConvBNReLU(8, 16, stride=2))   # /4
        self.S3 = GELayer(16, 24, stride=2)   # /8
        self.S4 = GELayer(24, 32, stride=2)   # /16
        self.S5_4 = GELayer(32, 48, stride=2)  # /32
        self.S5_5 = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(48, 48, 1))  # context embedding

    def forward(self, x):
        feat2 = self.S1S2(x)
        feat3 = self.S3(feat2)
        feat4 = self.S4(feat3)
        feat5_4 = self.S5_4(feat4)
        feat5_5 = feat5_4 + self.S5_5(feat5_4)
        return feat2, feat3, feat4, feat5_4, feat5_5


class BGALayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.left = nn.Sequential(nn.Conv2d(32, 32, 3, 1, 1, groups=32, bias=False), nn.BatchNorm2d(32),
                                  nn.Conv2d(32, 32, 1, bias=False))
        self.right = nn.Sequential(nn.Conv2d(48, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32))
        self.conv = ConvBNReLU(32, 32)

    def forward(self, x_d, x_s):
        right = F.interpolate(self.right(x_s), size=x_d.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv(self.left(x_d) * torch.sigmoid(right))


class SegmentHead(nn.Module):
    def __init__(self, cin, mid, n_classes):
        super().__init__()
        self.conv = ConvBNReLU(cin, mid)
        self.drop = nn.Dropout(0.1)
        self.conv_out = nn.Conv2d(mid, n_classes, 1)

    def forward(self, x, size):
        feat = self.conv_out(self.drop(self.conv(x)))
        return F.interpolate(feat, size=size, mode="bilinear", align_corners=False)


class BiSeNetV2(nn.Module):
    def __init__(self, n_classes, aux_mode="train"):
        super().__init__()
        self.aux_mode = aux_mode
        self.detail = DetailBranch()
        self.segment = SegmentBranch()
        self.bga = BGALayer()
        self.head = SegmentHead(32, 64, n_classes)
        if self.aux_mode == "train":
            self.aux2 = SegmentHead(16, 32, n_classes)
            self.aux3 = SegmentHead(24, 32, n_classes)
            self.aux4 = SegmentHead(32, 32, n_classes)
            self.aux5_4 = SegmentHead(48, 32, n_classes)
        self.init_weights()

    def forward(self, x):
        size = x.shape[2:]
        feat_d = self.detail(x)
        feat2, feat3, feat4, feat5_4, feat_s = self.segment(x)
        logits = self.head(self.bga(feat_d, feat_s), size)
        if self.aux_mode == "train":
            return (logits, self.aux2(feat2, size), self.aux3(feat3, size), self.aux4(feat4, size),
                    self.aux5_4(feat5_4, size))
        if self.aux_mode == "eval":
            return logits,
        raise NotImplementedError(self.aux_mode)

    def init_weights(self):
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
                if module.bias is not None:
                    nn.init.constant_(module.bias, 0)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.zeros_(module.weight) if getattr(module, "last_bn", False) else nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        # (the real one loads an ImageNet backbone here; the test trains from scratch)

    def get_params(self):
        wd, nowd, lr_mul_wd, lr_mul_nowd = [], [], [], []
        for name, child in self.named_children():
            heads = "head" in name or "aux" in name
            for p in child.parameters():
                if p.dim() == 1:
                    (lr_mul_nowd if heads else nowd).append(p)
                else:
                    (lr_mul_wd if heads else wd).append(p)
        return wd, nowd, lr_mul_wd, lr_mul_nowd


model_factory = {"bisenetv2": BiSeNetV2}

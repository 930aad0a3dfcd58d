"""A tiny DeepLabV3+ in the shape of the VainF repo's ``network/``: a backbone wrapped so
that it returns ``{'out': high-level, 'low_level': stride-4 features}``, a
``DeepLabHeadV3Plus`` (ASPP on the high-level features, upsampled and concatenated with the
projected low-level ones) as ``model.classifier``, and ``DeepLabV3`` resizing the logits
back to the input size.  Built from scratch: no pretrained weights."""
import torch
import torch.nn as nn
import torch.nn.functional as F


def conv_bn(cin, cout, stride=1, dilation=1, k=3):
    pad = dilation * (k // 2)
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, pad, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class TinyBackbone(nn.Module):
    """Stride-4 low-level stage, then a stride-16 high-level stage (mobilenet-like widths)."""

    def __init__(self):
        super().__init__()
        self.low_level_features = nn.Sequential(conv_bn(3, 16, 2), conv_bn(16, 24, 2))
        self.high_level_features = nn.Sequential(conv_bn(24, 32, 2), conv_bn(32, 48, 2), conv_bn(48, 64, dilation=2))

    def forward(self, x):
        low = self.low_level_features(x)
        return {"low_level": low, "out": self.high_level_features(low)}


class ASPP(nn.Module):
    def __init__(self, cin, rates, cout=32):
        super().__init__()
        self.branches = nn.ModuleList([conv_bn(cin, cout, k=1)] + [conv_bn(cin, cout, dilation=r) for r in rates])
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1, bias=False), nn.ReLU(inplace=True))
        self.project = nn.Sequential(conv_bn(cout * (len(rates) + 2), cout, k=1), nn.Dropout(0.1))

    def forward(self, x):
        feats = [b(x) for b in self.branches]
        feats.append(F.interpolate(self.pool(x), size=x.shape[-2:], mode="bilinear", align_corners=False))
        return self.project(torch.cat(feats, dim=1))


class DeepLabHeadV3Plus(nn.Module):
    def __init__(self, in_channels, low_level_channels, num_classes, aspp_dilate=(2, 4, 6)):
        super().__init__()
        self.project = conv_bn(low_level_channels, 12, k=1)
        self.aspp = ASPP(in_channels, aspp_dilate)
        self.classifier = nn.Sequential(conv_bn(32 + 12, 32), nn.Conv2d(32, num_classes, 1))

    def forward(self, feature):
        low = self.project(feature["low_level"])
        out = F.interpolate(self.aspp(feature["out"]), size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.classifier(torch.cat([low, out], dim=1))


class DeepLabV3(nn.Module):
    def __init__(self, backbone, classifier):
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier

    def forward(self, x):
        size = x.shape[-2:]
        out = self.classifier(self.backbone(x))
        return F.interpolate(out, size=size, mode="bilinear", align_corners=False)


def deeplabv3plus_tiny(num_classes=19, output_stride=16, pretrained_backbone=False):
    assert not pretrained_backbone, "the test model has no pretrained weights"
    return DeepLabV3(TinyBackbone(), DeepLabHeadV3Plus(64, 24, num_classes))


def set_bn_momentum(model, momentum=0.1):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = momentum

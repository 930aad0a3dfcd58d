"""A tiny DeepLabV3-shaped model in the way torchvision builds its segmentation models (no
torchvision import): a backbone whose intermediate layers are returned by name
(``{'out': layer4, 'aux': layer3}``), a classifier on 'out', an FCN auxiliary classifier on
'aux' when ``aux_loss`` is set, both upsampled to the input size and returned as a dict."""
from collections import OrderedDict

import torch.nn as nn
import torch.nn.functional as F


def conv_bn_relu(i, o, stride=1, dilation=1):
    return nn.Sequential(nn.Conv2d(i, o, 3, stride, dilation, dilation, bias=False),
                         nn.BatchNorm2d(o), nn.ReLU(inplace=True))


class TinyBackbone(nn.Module):
    def __init__(self, w=16):
        super().__init__()
        self.stem = conv_bn_relu(3, w, 2)
        self.layer1 = conv_bn_relu(w, w)
        self.layer2 = conv_bn_relu(w, 2 * w, 2)
        self.layer3 = conv_bn_relu(2 * w, 2 * w, dilation=2)
        self.layer4 = conv_bn_relu(2 * w, 4 * w, dilation=2)

    def forward(self, x):
        x = self.layer2(self.layer1(self.stem(x)))
        aux = self.layer3(x)
        return OrderedDict(aux=aux, out=self.layer4(aux))


class DeepLabHead(nn.Sequential):
    def __init__(self, in_channels, num_classes):
        super().__init__(conv_bn_relu(in_channels, in_channels // 2), nn.Dropout(0.1),
                         nn.Conv2d(in_channels // 2, num_classes, 1))


class FCNHead(nn.Sequential):
    def __init__(self, in_channels, channels):
        inter = in_channels // 2
        super().__init__(conv_bn_relu(in_channels, inter), nn.Dropout(0.1), nn.Conv2d(inter, channels, 1))


class DeepLabV3(nn.Module):
    def __init__(self, backbone, classifier, aux_classifier=None):
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier
        self.aux_classifier = aux_classifier

    def forward(self, x):
        input_shape = x.shape[-2:]
        features = self.backbone(x)
        result = OrderedDict()
        out = self.classifier(features["out"])
        result["out"] = F.interpolate(out, size=input_shape, mode="bilinear", align_corners=False)
        if self.aux_classifier is not None:
            aux = self.aux_classifier(features["aux"])
            result["aux"] = F.interpolate(aux, size=input_shape, mode="bilinear", align_corners=False)
        return result


def deeplabv3_tiny(num_classes, aux_loss=False):
    backbone = TinyBackbone(16)
    return DeepLabV3(backbone, DeepLabHead(64, num_classes), FCNHead(32, num_classes) if aux_loss else None)

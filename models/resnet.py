"""CIFAR-style ResNet-18 from torchvision's own ResNet pieces (BasicBlock, _make_layer, forward).

The CIFAR variant (He et al. 2016, as in most CIFAR benchmarks): a 3x3 stride-1 stem and no
max-pool, so 32x32 inputs keep their resolution into layer1. ``width`` is the stem's channel
count (64 in the standard model); the four stages have width, 2w, 4w and 8w channels.
"""

from __future__ import annotations

from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet, conv3x3


class CifarResNet18(ResNet):
    def __init__(self, in_channels: int, num_classes: int, width: int = 64):
        nn.Module.__init__(self)  # ResNet.__init__ hard-codes 64 channels and the ImageNet stem
        self._norm_layer = nn.BatchNorm2d
        self.inplanes, self.dilation, self.groups, self.base_width = width, 1, 1, 64
        self.conv1 = conv3x3(in_channels, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity()
        self.layer1 = self._make_layer(BasicBlock, width, 2)
        self.layer2 = self._make_layer(BasicBlock, 2 * width, 2, stride=2)
        self.layer3 = self._make_layer(BasicBlock, 4 * width, 2, stride=2)
        self.layer4 = self._make_layer(BasicBlock, 8 * width, 2, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(8 * width, num_classes)
        for m in self.modules():  # torchvision's ResNet initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

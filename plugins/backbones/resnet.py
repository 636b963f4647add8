"""ResNet backbones with the S3L small-image options: small stem, width multiplier, conv5 removed.

The small-image stem (a 3x3 stride-1 convolution and no max-pool) keeps 32-64 px inputs
from being downsampled to nothing; the standard stem (``small_stem=False``: 7x7 stride 2 +
max-pool) is torchvision's, for larger images, and with it the network is torchvision's
ResNet without its classifier (same layers, same parameter order). ``width`` multiplies every
stage's channels (S3L's small architectures: 0.25, 0.5, 1); ``drop_conv5`` removes the last
stage (S3L's conv5-removed variant), so the features are those of conv4.
Registered with :func:`ssl_bench.blocks.backbones.register_backbone`.
"""

import math

from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from ssl_bench.blocks.backbones import register_backbone
from ssl_bench.errors import UserError

__version__ = "0.1.0"
__license__ = "Apache-2.0"
__paper__ = "He et al., Deep Residual Learning for Image Recognition, CVPR 2016"

#: the widest multiplier (x16: 8,192 channels in conv5, about 2.8 billion parameters for ResNet-18)
MAX_WIDTH = 16.0


class ResNet(nn.Module):
    """A ResNet trunk ending in global average pooling; ``feature_dim`` is the output width."""

    def __init__(self, block, layers, width=1.0, small_stem=True, drop_conv5=False):
        super().__init__()
        if isinstance(width, bool) or not isinstance(width, (int, float)) or not 0 < width <= MAX_WIDTH or math.isnan(width):
            raise UserError(f"resnet: width must be a number in (0, {MAX_WIDTH:g}] (S3L uses 0.25, 0.5, 1), got {width!r}")
        widths = [max(8, int(round(w * width))) for w in (64, 128, 256, 512)]
        if drop_conv5:
            widths, layers = widths[:3], layers[:3]
        self.inplanes = widths[0]
        if small_stem:
            self.stem = nn.Sequential(
                nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)
            )
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(3, widths[0], 7, 2, 3, bias=False),
                nn.BatchNorm2d(widths[0]),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, 2, 1),
            )
        stages = []
        for i, (w, n) in enumerate(zip(widths, layers)):
            stages.append(self._stage(block, w, n, stride=1 if i == 0 else 2))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = widths[-1] * block.expansion
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _stage(self, block, planes, blocks, stride):
        down = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            down = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, down)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        return self.pool(self.stages(self.stem(x))).flatten(1)


@register_backbone
def resnet18(width: float = 1.0, small_stem: bool = True, drop_conv5: bool = False) -> ResNet:
    return ResNet(BasicBlock, [2, 2, 2, 2], width, small_stem, drop_conv5)


@register_backbone
def resnet50(width: float = 1.0, small_stem: bool = True, drop_conv5: bool = False) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 6, 3], width, small_stem, drop_conv5)

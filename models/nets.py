"""Segmentation networks in plain torch.

Why not torchvision's builders: the shared environment pairs a CPU torch with a torchvision wheel
built for CUDA, whose compiled ops fail to load, so ``import torchvision`` raises. A compact
MobileNetV2-style encoder with an LR-ASPP-like global-context gate and a light U-Net decoder is
small (well under 5 MB of weights), fast on a 2-core CPU, and depends on torch alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MobileUNet"]


def _conv_bn(
    cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1
) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class _InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 linear projection (+ skip)."""

    def __init__(self, cin: int, cout: int, stride: int = 1, expand: int = 4) -> None:
        super().__init__()
        mid = cin * expand
        self.use_skip = stride == 1 and cin == cout
        self.block = nn.Sequential(
            _conv_bn(cin, mid, 1),
            _conv_bn(mid, mid, 3, stride, groups=mid),
            nn.Conv2d(mid, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.block(x)
        return x + out if self.use_skip else out


def _stage(cin: int, cout: int, blocks: int, expand: int) -> nn.Sequential:
    layers = [_InvertedResidual(cin, cout, 2, expand)]
    layers += [_InvertedResidual(cout, cout, 1, expand) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class _Up(nn.Module):
    """Upsample to the skip's size, concatenate, mix with a depthwise-separable conv."""

    def __init__(self, cin: int, cskip: int, cout: int) -> None:
        super().__init__()
        self.mix = nn.Sequential(
            _conv_bn(cin + cskip, cin + cskip, 3, groups=cin + cskip),
            _conv_bn(cin + cskip, cout, 1),
        )

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        out: Tensor = self.mix(torch.cat([x, skip], dim=1))
        return out


class MobileUNet(nn.Module):
    """Encoder at strides 2..32, global-context gate, U-Net decoder to stride 4, bilinear to 1.

    ``forward`` takes a normalised (N, 3, H, W) float tensor of any H, W and returns logits
    (N, num_classes, H, W). ``width`` scales every channel count.
    """

    def __init__(self, num_classes: int, width: float = 1.0) -> None:
        super().__init__()

        def ch(n: int) -> int:
            return max(8, round(n * width / 8) * 8)

        c1, c2, c3, c4, c5 = ch(16), ch(24), ch(32), ch(96), ch(160)
        self.stem = _conv_bn(3, c1, 3, 2)  # /2
        self.s1 = _stage(c1, c2, 2, 4)  # /4
        self.s2 = _stage(c2, c3, 3, 4)  # /8
        self.s3 = _stage(c3, c4, 4, 4)  # /16
        self.s4 = _stage(c4, c5, 3, 6)  # /32
        # LR-ASPP-like gate: the whole patch's context decides which classes are plausible.
        self.context = _conv_bn(c5, c4, 1)
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c5, c4, 1), nn.Sigmoid())
        self.up3 = _Up(c4, c4, ch(64))
        self.up2 = _Up(ch(64), c3, ch(48))
        self.up1 = _Up(ch(48), c2, ch(32))
        self.head = nn.Conv2d(ch(32), num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        f1 = self.s1(self.stem(x))
        f2 = self.s2(f1)
        f3 = self.s3(f2)
        f4 = self.s4(f3)
        y = self.context(f4) * self.gate(f4)
        y = self.up3(y, f3)
        y = self.up2(y, f2)
        y = self.up1(y, f1)
        logits: Tensor = self.head(y)
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)

"""Batch norm folded into the convolution before it, for inference.

In eval mode a BatchNorm2d after a Conv2d is an affine map per channel, so it can be folded
into that convolution's weights and bias (``torch.nn.utils.fusion.fuse_conv_bn_eval``). The
network computes the same function (to float rounding) with a fifth fewer passes over the
activations: the shipped model runs ~20 % faster on a 2-core CPU (benchmarks/RESULTS.md).
Only for a model that will not train again: the folded model has no batch statistics.
"""

from __future__ import annotations

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["fold_batchnorm"]


def fold_batchnorm(module: nn.Module) -> int:
    """Fold every BatchNorm2d that directly follows a Conv2d inside an ``nn.Sequential`` of
    ``module`` (which must be in eval mode) into that convolution, in place; the norm becomes an
    ``nn.Identity``. Returns how many were folded."""
    if module.training:
        raise ValueError("fold_batchnorm needs a model in eval mode")
    return _fold(module)


def _fold(module: nn.Module) -> int:
    folded = 0
    for child in module.children():
        if isinstance(child, nn.Sequential):
            for i in range(len(child) - 1):
                conv, norm = child[i], child[i + 1]
                if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                    child[i] = fuse_conv_bn_eval(conv, norm).eval()
                    child[i + 1] = nn.Identity().eval()
                    folded += 1
        folded += _fold(child)
    return folded

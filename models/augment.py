"""Batch augmentation on tensors: geometry (crop, scale, flips, rot90) and stain/colour jitter.

Colour matters twice here: stain differs between scanners and labs, and in EBHI-Seg it also
differs by class, so without jitter a network can learn the class from the colour cast alone
and then fail on a scanner slide.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["color_jitter", "geometric", "hed_jitter"]

# Ruifrok & Johnston stain vectors (haematoxylin, eosin, DAB), rows = stain OD in R, G, B.
_RGB_FROM_HED = torch.tensor([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
_RGB_FROM_HED = _RGB_FROM_HED / _RGB_FROM_HED.norm(dim=1, keepdim=True)
_HED_FROM_RGB = torch.linalg.inv(_RGB_FROM_HED)


def geometric(
    images: Tensor, labels: Tensor, crop: int, gen: torch.Generator, scale: float = 0.15
) -> tuple[Tensor, Tensor]:
    """Random rescale (one factor per batch, ±``scale``), crop, flips and rot90 per sample.

    ``images`` float (N, 3, H, W), ``labels`` long (N, H, W).
    """
    factor = 1.0 + (torch.rand((), generator=gen).item() * 2 - 1) * scale
    size = max(crop, round(images.shape[-1] * factor))
    if size != images.shape[-1]:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
        labels = F.interpolate(labels[:, None].float(), size=(size, size), mode="nearest")[:, 0]
        labels = labels.long()
    out_x, out_y = [], []
    for i in range(images.shape[0]):
        top = int(torch.randint(0, size - crop + 1, (), generator=gen))
        left = int(torch.randint(0, size - crop + 1, (), generator=gen))
        x = images[i, :, top : top + crop, left : left + crop]
        y = labels[i, top : top + crop, left : left + crop]
        k = int(torch.randint(0, 4, (), generator=gen))
        if torch.rand((), generator=gen) < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        out_x.append(torch.rot90(x, k, (-2, -1)))
        out_y.append(torch.rot90(y, k, (-2, -1)))
    return torch.stack(out_x), torch.stack(out_y)


def hed_jitter(images: Tensor, gen: torch.Generator, sigma: float = 0.05) -> Tensor:
    """Scale and shift each stain's optical density per sample (Tellez et al. 2018 style).

    ``images`` float (N, 3, H, W) in 0..1.
    """
    n = images.shape[0]
    od = -torch.log(images.clamp(min=1.0 / 255.0))  # (N, 3, H, W), optical density
    stains = torch.einsum("nchw,cs->nshw", od, _HED_FROM_RGB.to(images))
    alpha = 1.0 + (torch.rand(n, 3, 1, 1, generator=gen) * 2 - 1).to(images) * sigma * 4
    beta = (torch.rand(n, 3, 1, 1, generator=gen) * 2 - 1).to(images) * sigma
    stains = stains * alpha + beta
    od = torch.einsum("nshw,sc->nchw", stains, _RGB_FROM_HED.to(images))
    return torch.exp(-od).clamp(0.0, 1.0)


def color_jitter(
    images: Tensor,
    gen: torch.Generator,
    brightness: float = 0.1,
    contrast: float = 0.15,
    saturation: float = 0.2,
) -> Tensor:
    """Per-sample brightness, contrast and saturation jitter on (N, 3, H, W) 0..1 floats."""
    n = images.shape[0]

    def factor(amount: float) -> Tensor:
        return (1.0 + (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * amount).to(images)

    grey = (images * torch.tensor([0.299, 0.587, 0.114]).to(images).view(1, 3, 1, 1)).sum(
        1, keepdim=True
    )
    images = grey + (images - grey) * factor(saturation)
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    images = mean + (images - mean) * factor(contrast)
    return (images * factor(brightness)).clamp(0.0, 1.0)

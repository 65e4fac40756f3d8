"""Dice for the two questions the card answers: where is epithelium, and which of it is tumour.

Pixels are pooled over the whole split (sum of intersections over sum of sizes), the usual way
to report segmentation Dice on a patch dataset; an image without the class then cannot make the
score undefined.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor, nn

__all__ = [
    "BACKGROUND",
    "EPITHELIUM",
    "TUMOUR",
    "DiceCounts",
    "baselines",
    "dice",
    "normalise",
    "predict_labels",
]

BACKGROUND, EPITHELIUM, TUMOUR = 0, 1, 2


def dice(pred: NDArray[np.bool_], target: NDArray[np.bool_]) -> float:
    """Dice of two boolean masks; 1.0 when both are empty (nothing to find, nothing found)."""
    inter = int(np.count_nonzero(pred & target))
    total = int(np.count_nonzero(pred)) + int(np.count_nonzero(target))
    return 1.0 if total == 0 else 2.0 * inter / total


@dataclass
class DiceCounts:
    """Running pooled counts; ``update`` with label maps (any shape, values 0/1/2)."""

    inter: dict[str, int] = field(default_factory=lambda: {"epithelium": 0, "tumour": 0})
    total: dict[str, int] = field(default_factory=lambda: {"epithelium": 0, "tumour": 0})

    def update(self, pred: NDArray[np.integer], target: NDArray[np.integer]) -> None:
        for key, p, t in (
            ("epithelium", pred != BACKGROUND, target != BACKGROUND),
            ("tumour", pred == TUMOUR, target == TUMOUR),
        ):
            self.inter[key] += int(np.count_nonzero(p & t))
            self.total[key] += int(np.count_nonzero(p)) + int(np.count_nonzero(t))

    def scores(self) -> dict[str, float]:
        """``{"dice_epithelium": ..., "dice_tumour": ...}``."""
        return {
            f"dice_{key}": (
                1.0 if self.total[key] == 0 else 2.0 * self.inter[key] / self.total[key]
            )
            for key in self.inter
        }


def baselines(targets: NDArray[np.integer]) -> dict[str, float]:
    """Trivial predictors on ``targets``: every pixel epithelium; every pixel tumour."""
    fg = targets != BACKGROUND
    tumour = targets == TUMOUR
    everything = np.ones_like(fg)
    return {
        "all_foreground_dice_epithelium": dice(everything, fg),
        "all_tumour_dice_tumour": dice(everything, tumour),
        "all_background_dice_tumour": dice(~everything, tumour),
    }


def normalise(images: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """uint8 or 0..1 float (N, 3, H, W) -> the network's normalised float input."""
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


@torch.inference_mode()
def predict_labels(
    model: nn.Module,
    images: NDArray[np.uint8],
    mean: tuple[float, ...],
    std: tuple[float, ...],
    batch_size: int = 16,
    device: str | torch.device = "cpu",
) -> NDArray[np.uint8]:
    """Class index per pixel for (N, H, W, 3) uint8 images -> (N, H, W) uint8."""
    was_training = model.training
    model.eval()
    out = np.empty(images.shape[:3], dtype=np.uint8)
    for start in range(0, len(images), batch_size):
        chunk = torch.from_numpy(images[start : start + batch_size]).to(device)
        x = normalise(chunk.permute(0, 3, 1, 2), mean, std)
        out[start : start + batch_size] = model(x).argmax(1).to(torch.uint8).cpu().numpy()
    model.train(was_training)
    return out

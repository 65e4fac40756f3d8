"""Pixel comparisons shared by the tiling tests."""

from __future__ import annotations

import math

import numpy as np


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def area_half(image: np.ndarray) -> np.ndarray:
    """Reference 2x area average with the ceil rule (odd edge averages with itself), in float."""
    h, w = image.shape[:2]
    src = np.pad(image.astype(np.float64), ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    return (src[0::2, 0::2] + src[1::2, 0::2] + src[0::2, 1::2] + src[1::2, 1::2]) / 4


def reference_levels(level0: np.ndarray, count: int) -> list[np.ndarray]:
    levels = [level0.astype(np.float64)]
    for _ in range(count - 1):
        levels.append(area_half(levels[-1]))
    return [np.clip(np.rint(level), 0, 255).astype(np.uint8) for level in levels]

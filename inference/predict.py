"""The model on plain images at their native scale (``iain predict``).

Same patch grid and blending as the slide engine, over an in-memory image: images larger than
one patch are overlap-tiled, smaller ones padded with white (glass).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image, UnidentifiedImageError

from inference.engine import Engine
from inference.errors import InvalidImageError

__all__ = ["predict_array", "predict_files", "read_rgb"]

MAX_PREDICT_PIXELS = 100_000_000  # plain images only; whole slides go through ``iain infer``


def read_rgb(path: Path) -> npt.NDArray[np.uint8]:
    """An RGB array from any image Pillow reads, or :class:`InvalidImageError`."""
    try:
        with Image.open(path) as image:
            if image.width * image.height > MAX_PREDICT_PIXELS:
                raise InvalidImageError(f"{path.name}: {image.width}x{image.height} is too large")
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError as exc:
        raise InvalidImageError(f"{path.name}: no such file") from exc
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise InvalidImageError(f"{path.name}: not a readable image") from exc


@torch.inference_mode()
def predict_array(engine: Engine, rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """(y, x, 3) uint8 -> (y, x) class indices in the card's class order."""
    spec = engine.spec
    tile, halo = spec.tile_size_px, spec.overlap_px // 2
    stride = tile - 2 * halo
    height, width = rgb.shape[:2]
    cols, rows = max(1, math.ceil(width / stride)), max(1, math.ceil(height / stride))
    padded_h, padded_w = rows * stride + 2 * halo, cols * stride + 2 * halo
    canvas = np.full((padded_h, padded_w, 3), 255, dtype=np.uint8)
    canvas[halo : halo + height, halo : halo + width] = rgb
    window = torch.from_numpy(canvas).permute(2, 0, 1).to(engine.device)
    window = (window.float() - engine._mean) / engine._std
    acc = torch.zeros((len(spec.classes), padded_h, padded_w), device=engine.device)
    wsum = torch.zeros((padded_h, padded_w), device=engine.device)
    offsets = [(c * stride, r * stride) for r in range(rows) for c in range(cols)]
    batch_size = engine.options.batch_size
    for start in range(0, len(offsets), batch_size):
        take = offsets[start : start + batch_size]
        inputs = torch.stack([window[:, y : y + tile, x : x + tile] for x, y in take])
        probs = engine.forward_probs(inputs)
        for (x, y), prob in zip(take, probs, strict=True):
            acc[:, y : y + tile, x : x + tile] += prob
            wsum[y : y + tile, x : x + tile] += engine._weight
    blended = acc[:, halo : halo + height, halo : halo + width]
    blended = blended / wsum[halo : halo + height, halo : halo + width].clamp_min(1e-6)
    return np.asarray(blended.argmax(dim=0).to(torch.uint8).cpu().numpy(), dtype=np.uint8)


def predict_files(engine: Engine, images: Sequence[Path], out: Path) -> Iterator[Path]:
    """Write ``out/<stem>.png`` (one class index per pixel) for each image; yields the paths."""
    out.mkdir(parents=True, exist_ok=True)
    for path in images:
        mask = predict_array(engine, read_rgb(path))
        target = out / f"{path.stem}.png"
        Image.fromarray(mask, mode="L").save(target)
        yield target

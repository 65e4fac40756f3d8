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


def _cores(length: int, stride: int) -> list[tuple[int, int]]:
    count = max(1, math.ceil(length / stride))
    bounds = [round(i * length / count) for i in range(count + 1)]
    return [(bounds[i], bounds[i + 1] - bounds[i]) for i in range(count)]


@torch.inference_mode()
def predict_array(engine: Engine, rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """(y, x, 3) uint8 -> (y, x) class indices in the card's class order.

    The image is one work unit of the slide engine: evenly spread patches, blended inside,
    white (glass) context past the image's edges.
    """
    spec = engine.spec
    tile = spec.tile_size_px
    stride = tile - 2 * (spec.overlap_px // 2)
    height, width = rgb.shape[:2]
    pad = tile // 2 + 1
    canvas = np.full((height + 2 * pad, width + 2 * pad, 3), 255, dtype=np.uint8)
    canvas[pad : pad + height, pad : pad + width] = rgb
    window = torch.from_numpy(canvas).permute(2, 0, 1).to(engine.device)
    acc = torch.zeros((len(spec.classes), *canvas.shape[:2]), device=engine.device)
    wsum = torch.zeros(canvas.shape[:2], device=engine.device)
    cols, rows = _cores(width, stride), _cores(height, stride)
    patches = []
    for j, (cy, ch) in enumerate(rows):
        for i, (cx, cw) in enumerate(cols):
            weight_x = engine.ramp(cw, i == 0, i == len(cols) - 1)
            weight_y = engine.ramp(ch, j == 0, j == len(rows) - 1)
            x, y = pad + cx - (tile - cw) // 2, pad + cy - (tile - ch) // 2
            patches.append((x, y, weight_y[:, None] * weight_x[None, :]))
    batch_size = engine.options.batch_size
    for start in range(0, len(patches), batch_size):
        take = patches[start : start + batch_size]
        inputs = torch.stack([window[:, y : y + tile, x : x + tile] for x, y, _ in take])
        probs = engine.forward_probs(engine.normalise(inputs))
        for (x, y, weight), prob in zip(take, probs, strict=True):
            acc[:, y : y + tile, x : x + tile] += prob * weight
            wsum[y : y + tile, x : x + tile] += weight
    blended = acc[:, pad : pad + height, pad : pad + width]
    blended = blended / wsum[pad : pad + height, pad : pad + width].clamp_min(1e-6)
    return np.asarray(blended.argmax(dim=0).to(torch.uint8).cpu().numpy(), dtype=np.uint8)


def predict_files(engine: Engine, images: Sequence[Path], out: Path) -> Iterator[Path]:
    """Write ``out/<stem>.png`` (one class index per pixel) for each image; yields the paths."""
    out.mkdir(parents=True, exist_ok=True)
    for path in images:
        mask = predict_array(engine, read_rgb(path))
        target = out / f"{path.stem}.png"
        Image.fromarray(mask, mode="L").save(target)
        yield target

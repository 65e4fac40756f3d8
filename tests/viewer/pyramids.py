"""Write IAIN pyramids for tests (and the benchmark) straight to tiling/layout.py's layout.

Stands in for ``tiling.convert`` until it lands: zarr v3 metadata written as JSON, each
chunk one JPEG (imagecodecs) of a full tile, edge chunks padded with white.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import numpy.typing as npt
from PIL import Image

from tiling.layout import FILL_VALUE, JPEG_CODEC_NAME, PyramidSpec, chunk_key

RGB = npt.NDArray[np.uint8]


def synthetic_rgb(width: int, height: int, seed: int = 0) -> RGB:
    """Smooth coloured gradients with a pattern, so every tile differs and JPEG stays small."""
    y, x = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(seed)
    a, b = rng.uniform(0.01, 0.05, 2)
    red = 128 + 100 * np.sin(x * a)
    green = 128 + 100 * np.cos(y * b)
    blue = (x + y) % 256
    return np.stack([red, green, blue], axis=-1).astype(np.uint8)


def write_pyramid(
    path: Path,
    pixels: RGB,
    tile: int = 256,
    mpp: float | None = 0.5,
    quality: int = 90,
    skip_white: bool = False,
    iain: dict[str, Any] | None = None,
) -> PyramidSpec:
    """Write ``pixels`` (y, x, 3) as an IAIN pyramid at ``path``; returns its geometry."""
    height, width = pixels.shape[:2]
    spec = PyramidSpec(width, height, tile, tile, mpp, mpp)
    path.mkdir(parents=True)
    level_pixels = pixels
    datasets = []
    for level in range(spec.level_count):
        lw, lh = spec.level_size(level)
        if level > 0:
            level_pixels = np.asarray(
                Image.fromarray(level_pixels).resize((lw, lh), Image.Resampling.BOX)
            )
        cols, rows = spec.grid(level)
        padded = np.full((rows * tile, cols * tile, 3), FILL_VALUE, np.uint8)
        padded[:lh, :lw] = level_pixels
        for row in range(rows):
            for col in range(cols):
                block = padded[row * tile : (row + 1) * tile, col * tile : (col + 1) * tile]
                if skip_white and (block == FILL_VALUE).all():
                    continue
                key = path / chunk_key(level, col, row)
                key.parent.mkdir(parents=True, exist_ok=True)
                key.write_bytes(
                    imagecodecs.jpeg8_encode(np.ascontiguousarray(block), level=quality)
                )
        array = {
            "zarr_format": 3,
            "node_type": "array",
            "shape": [3, lh, lw],
            "data_type": "uint8",
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [3, tile, tile]}},
            "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
            "fill_value": FILL_VALUE,
            "codecs": [
                {"name": "transpose", "configuration": {"order": [1, 2, 0]}},
                {"name": JPEG_CODEC_NAME, "configuration": {"quality": quality}},
            ],
            "dimension_names": ["c", "y", "x"],
            "attributes": {},
        }
        (path / str(level)).mkdir(exist_ok=True)
        (path / str(level) / "zarr.json").write_text(json.dumps(array))
        scale = float(2**level)
        datasets.append(
            {
                "path": str(level),
                "coordinateTransformations": [
                    {"type": "scale", "scale": [1.0, (mpp or 1.0) * scale, (mpp or 1.0) * scale]}
                ],
            }
        )
    unit = {"unit": "micrometer"} if mpp else {}
    attrs = {
        "ome": {
            "version": "0.5",
            "multiscales": [
                {
                    "name": path.stem,
                    "axes": [
                        {"name": "c", "type": "channel"},
                        {"name": "y", "type": "space", **unit},
                        {"name": "x", "type": "space", **unit},
                    ],
                    "datasets": datasets,
                }
            ],
        },
        "iain": {
            "source_sha256": hashlib.sha256(pixels.tobytes()).hexdigest(),
            "vendor": "synthetic",
            "objective_power": 20.0,
            **(iain or {}),
        },
    }
    root = {"zarr_format": 3, "node_type": "group", "attributes": attrs}
    (path / "zarr.json").write_text(json.dumps(root))
    # identifying images live beside the pyramid and must never be served
    (path / "associated" / "label").mkdir(parents=True)
    (path / "associated" / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group"}')
    (path / "associated" / "label" / "zarr.json").write_text('{"secret": "PATIENT-NAME"}')
    return spec


def level_count(width: int, height: int, tile: int) -> int:
    return PyramidSpec(width, height, tile, tile).level_count


def dz_levels(width: int, height: int) -> int:
    return math.ceil(math.log2(max(width, height))) + 1

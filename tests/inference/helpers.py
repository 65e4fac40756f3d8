"""Test slides and tiny models for the inference tests (importable by subprocesses too).

``write_store`` writes an IAIN OME-Zarr pyramid (``tiling/layout.py``) straight from an array:
root and array ``zarr.json`` plus one standalone JPEG per chunk file, as the converter does.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from inference.spec import ModelSpec
from tiling.layout import chunk_key, level_count_for

GLASS = (245, 245, 242)
EPITHELIUM = (150, 60, 170)  # purple
TUMOUR = (200, 40, 40)  # red
PROTOTYPES = (GLASS, EPITHELIUM, TUMOUR)
CLASSES = ("background", "epithelium", "tumour")
COLORS = ((0, 0, 0), (0, 160, 0), (220, 0, 0))


def regions_image(width: int, height: int) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """A slide with known regions on 16-px boundaries (JPEG keeps flat 16x16 blocks exact):
    returns (rgb, class mask). A purple band with a red square inside, and a lone red block."""
    rgb = np.empty((height, width, 3), dtype=np.uint8)
    rgb[:] = GLASS
    mask = np.zeros((height, width), dtype=np.uint8)

    def fill(x0: int, y0: int, x1: int, y1: int, cls: int) -> None:
        rgb[y0:y1, x0:x1] = PROTOTYPES[cls]
        mask[y0:y1, x0:x1] = cls

    fill(96, 64, width - 160, height // 2 + 32, 1)
    fill(304, 144, 304 + 352, 144 + 192, 2)
    fill(width - 112, height - 176, width - 16, height - 48, 2)
    return rgb, mask


def write_store(
    root: Path,
    rgb: npt.NDArray[np.uint8],
    tile: int = 256,
    mpp: float | None = 0.5,
    quality: int = 95,
) -> Path:
    """Write ``rgb`` (y, x, 3) as an IAIN pyramid at ``root`` (levels by 2x2 mean)."""
    root.mkdir(parents=True)
    height, width = rgb.shape[:2]
    count = level_count_for(width, height, tile, tile)
    level = rgb
    datasets = []
    for k in range(count):
        h, w = level.shape[:2]
        (root / str(k)).mkdir()
        (root / str(k) / "zarr.json").write_text(json.dumps(_array_meta(w, h, tile)))
        for row in range(math.ceil(h / tile)):
            for col in range(math.ceil(w / tile)):
                block = np.full((tile, tile, 3), 255, dtype=np.uint8)
                part = level[row * tile : (row + 1) * tile, col * tile : (col + 1) * tile]
                block[: part.shape[0], : part.shape[1]] = part
                path = root / chunk_key(k, col, row)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(imagecodecs.jpeg_encode(block, level=quality))
        scale = [1.0, (mpp or 1.0) * 2**k, (mpp or 1.0) * 2**k]
        datasets.append(
            {"path": str(k), "coordinateTransformations": [{"type": "scale", "scale": scale}]}
        )
        padded = np.pad(level, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge").astype(np.float32)
        level = (
            (padded.reshape(padded.shape[0] // 2, 2, padded.shape[1] // 2, 2, 3).mean(axis=(1, 3)))
            .round()
            .astype(np.uint8)
        )
    unit = "micrometer" if mpp is not None else None
    axes: list[dict[str, Any]] = [{"name": "c", "type": "channel"}]
    for name in ("y", "x"):
        axis: dict[str, Any] = {"name": name, "type": "space"}
        if unit:
            axis["unit"] = unit
        axes.append(axis)
    iain: dict[str, Any] = {"width": width, "height": height, "tile_width": tile,
                            "tile_height": tile}  # fmt: skip
    if mpp is not None:
        iain["mpp"] = {"x": mpp, "y": mpp}
    meta = {
        "zarr_format": 3,
        "node_type": "group",
        "attributes": {
            "ome": {"version": "0.5", "multiscales": [{"axes": axes, "datasets": datasets}]},
            "iain": iain,
        },
    }
    (root / "zarr.json").write_text(json.dumps(meta))
    return root


def _array_meta(width: int, height: int, tile: int) -> dict[str, Any]:
    return {
        "zarr_format": 3,
        "node_type": "array",
        "shape": [3, height, width],
        "data_type": "uint8",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [3, tile, tile]}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 255,
        "codecs": [
            {"name": "transpose", "configuration": {"order": [1, 2, 0]}},
            {"name": "iain.jpeg", "configuration": {"quality": 95}},
        ],
        "dimension_names": ["c", "y", "x"],
    }


class ColourModel(nn.Module):
    """Logits = -distance to each class's prototype colour, after an optional box blur of
    ``radius`` px (context: a pipeline with a seam or a missing halo changes the result)."""

    def __init__(self, spec: ModelSpec, radius: int = 0) -> None:
        super().__init__()
        mean = torch.tensor(spec.mean).view(1, 3, 1, 1) * 255
        std = torch.tensor(spec.std).view(1, 3, 1, 1) * 255
        protos = torch.tensor(PROTOTYPES, dtype=torch.float32).view(1, 3, 3, 1, 1)
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.register_buffer("protos", protos)
        self.radius = radius
        self.seen: list[torch.Tensor] = []  # de-normalised inputs, when recording

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rgb = x * self.std + self.mean
        if self.radius:
            size = 2 * self.radius + 1
            rgb = nn.functional.avg_pool2d(
                rgb, size, stride=1, padding=self.radius, count_include_pad=False
            )
        distance = ((rgb[:, None] - self.protos) ** 2).sum(dim=2).sqrt()
        return -distance / 8.0


class RecordingModel(ColourModel):
    """Keeps every patch it is given (to prove glass never reaches the model)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append((x * self.std + self.mean).detach().clone())
        return super().forward(x)


def spec(mpp: float = 0.5, tile: int = 128, overlap: int = 16, name: str = "toy") -> ModelSpec:
    return ModelSpec(
        name=name,
        version="1",
        classes=CLASSES,
        colors=COLORS,
        mpp=mpp,
        tile_size_px=tile,
        overlap_px=overlap,
    )


def colour_factory(device: torch.device) -> tuple[ModelSpec, nn.Module]:
    """``--model tests.inference.helpers:colour_factory`` for the CLI tests."""
    model_spec = spec()
    return model_spec, ColourModel(model_spec, radius=2).to(device)


def slow_factory(device: torch.device) -> tuple[ModelSpec, nn.Module]:
    """Like ``colour_factory`` but slow, so a test can kill a run midway."""
    model_spec = spec()

    class Slow(ColourModel):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            import time

            time.sleep(0.05 * x.shape[0])
            return super().forward(x)

    return model_spec, Slow(model_spec, radius=2).to(device)


def global_reference(
    store: Path, model: ColourModel
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.float64]]:
    """The model applied to the whole decoded level 0 in one pass: (mask, probabilities 0-255)."""
    from inference._pyramid import SlidePyramid

    pyramid = SlidePyramid(store)
    info = pyramid.levels[0]
    rgb = pyramid.read_region(0, 0, 0, info.width, info.height)
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        probs = torch.softmax(model((x - model.mean) / model.std), dim=1)[0]
    mask = probs.argmax(0).numpy().astype(np.uint8)
    return mask, (probs * 255).round().numpy().astype(np.float64)

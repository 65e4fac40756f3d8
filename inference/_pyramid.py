"""Read-only access to a slide's OME-Zarr pyramid (``tiling/layout.py``): stored JPEG chunk bytes.

The engine reads chunk files as bytes and decodes them itself (in threads or on the GPU), so this
does not need the ``iain.jpeg`` zarr codec. Local stores only for now.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import numpy.typing as npt

from inference.errors import InvalidStoreError, StoreNotFoundError
from tiling.layout import FILL_VALUE, IAIN_ATTR, chunk_key

__all__ = ["LevelInfo", "SlidePyramid"]


@dataclass(frozen=True, slots=True)
class LevelInfo:
    """One stored level: (width, height), tile (width, height), grid (columns, rows)."""

    path: str
    width: int
    height: int
    tile_width: int
    tile_height: int

    @property
    def grid(self) -> tuple[int, int]:
        return math.ceil(self.width / self.tile_width), math.ceil(self.height / self.tile_height)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise InvalidStoreError(f"{path.name}: unreadable zarr metadata") from exc
    if not isinstance(data, dict):
        raise InvalidStoreError(f"{path.name}: zarr metadata is not an object")
    return data


class SlidePyramid:
    """A slide store opened for reading stored tiles; level 0 is full resolution."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        if not self.root.exists():
            raise StoreNotFoundError(f"no slide store at {self.root.name}")
        try:
            meta = _read_json(self.root / "zarr.json")
        except FileNotFoundError as exc:
            raise InvalidStoreError(f"{self.root.name} is not a zarr store (no zarr.json)") from exc
        attrs = meta.get("attributes", {})
        try:
            multiscale = attrs["ome"]["multiscales"][0]
            datasets = multiscale["datasets"]
        except (KeyError, IndexError, TypeError) as exc:
            raise InvalidStoreError(f"{self.root.name}: no OME multiscales metadata") from exc
        self.attributes: dict[str, Any] = attrs
        levels: list[LevelInfo] = []
        for dataset in datasets:
            path = str(dataset["path"])
            try:
                array_meta = _read_json(self.root / path / "zarr.json")
                _, height, width = (int(v) for v in array_meta["shape"])
                _, tile_h, tile_w = (
                    int(v) for v in array_meta["chunk_grid"]["configuration"]["chunk_shape"]
                )
            except (FileNotFoundError, KeyError, ValueError, TypeError) as exc:
                raise InvalidStoreError(f"{self.root.name}: level {path} is not (c, y, x)") from exc
            levels.append(LevelInfo(path, width, height, tile_w, tile_h))
        if not levels:
            raise InvalidStoreError(f"{self.root.name}: the pyramid has no levels")
        self.levels: tuple[LevelInfo, ...] = tuple(levels)
        self.mpp: float | None = self._find_mpp(multiscale)

    def _find_mpp(self, multiscale: dict[str, Any]) -> float | None:
        """mpp from IAIN's attributes, else from level 0's scale when the axes are micrometres."""
        iain = self.attributes.get(IAIN_ATTR, {})
        for key in ("mpp_x", "mpp"):
            value = iain.get(key) if isinstance(iain, dict) else None
            if isinstance(value, dict):
                value = value.get("x")
            if isinstance(value, int | float) and value > 0:
                return float(value)
        try:
            axes = multiscale["axes"]
            units = [axis.get("unit") for axis in axes]
            scale = next(
                t["scale"]
                for t in multiscale["datasets"][0]["coordinateTransformations"]
                if t.get("type") == "scale"
            )
        except (KeyError, StopIteration, TypeError, IndexError):
            return None
        if units[-1] == "micrometer" and float(scale[-1]) > 0:
            return float(scale[-1])
        return None

    def downsample(self, level: int) -> float:
        """Level-0 pixels per pixel of ``level`` (x)."""
        return self.levels[0].width / self.levels[level].width

    def read_chunk_bytes(self, level: int, col: int, row: int) -> bytes | None:
        """The stored JPEG of tile (col, row), or None where the chunk was never written (glass)."""
        # the layout names level k's array "k", so chunk_key is the file path
        path = self.root / chunk_key(level, col, row)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None

    def read_region(
        self, level: int, x: int, y: int, width: int, height: int
    ) -> npt.NDArray[np.uint8]:
        """(height, width, 3) pixels of ``level`` at (x, y) in that level; white outside."""
        info = self.levels[level]
        out = np.full((height, width, 3), FILL_VALUE, dtype=np.uint8)
        tw, th = info.tile_width, info.tile_height
        cols, rows = info.grid
        for row in range(max(0, y // th), min(rows, math.ceil((y + height) / th))):
            for col in range(max(0, x // tw), min(cols, math.ceil((x + width) / tw))):
                data = self.read_chunk_bytes(level, col, row)
                if data is None:
                    continue
                tile = decode_jpeg(data)
                paste(out, tile, col * tw - x, row * th - y)
        return out


def decode_jpeg(data: bytes) -> npt.NDArray[np.uint8]:
    """libjpeg-turbo decode (releases the GIL, so threads run in parallel)."""
    tile = imagecodecs.jpeg_decode(data)
    if tile.ndim == 2:
        tile = np.repeat(tile[:, :, None], 3, axis=2)
    return np.asarray(tile, dtype=np.uint8)


def paste(out: npt.NDArray[np.uint8], tile: npt.NDArray[np.uint8], x: int, y: int) -> None:
    """Copy ``tile`` into ``out`` with its top-left at (x, y), clipped to both."""
    height, width = out.shape[:2]
    sx0, sy0 = max(0, -x), max(0, -y)
    dx0, dy0 = max(0, x), max(0, y)
    w = min(tile.shape[1] - sx0, width - dx0)
    h = min(tile.shape[0] - sy0, height - dy0)
    if w > 0 and h > 0:
        out[dy0 : dy0 + h, dx0 : dx0 + w] = tile[sy0 : sy0 + h, sx0 : sx0 + w, :3]

"""The slide side of the engine: ``tiling.read.PyramidReader`` seen as levels, mpp and bytes.

The engine reads stored chunk JPEGs as bytes and decodes them itself (threads on CPU, nvJPEG on
CUDA); tiling's errors become inference errors here, once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from inference.errors import InvalidStoreError, StoreNotFoundError
from tiling.codec import decode_jpeg as _tiling_decode
from tiling.errors import ChunkDecodeError, PyramidNotFoundError, TilingError
from tiling.read import PyramidReader

__all__ = ["LevelInfo", "SlidePyramid", "decode_jpeg"]


@dataclass(frozen=True, slots=True)
class LevelInfo:
    """One stored level: (width, height) and tile (width, height) in pixels."""

    width: int
    height: int
    tile_width: int
    tile_height: int

    @property
    def grid(self) -> tuple[int, int]:
        return math.ceil(self.width / self.tile_width), math.ceil(self.height / self.tile_height)


class SlidePyramid:
    """A slide store opened for reading stored tiles; level 0 is full resolution."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        try:
            self.reader = PyramidReader(self.root)
        except PyramidNotFoundError as exc:
            if self.root.exists():
                raise InvalidStoreError(f"{self.root.name} is not a slide store") from exc
            raise StoreNotFoundError(f"no slide store at {self.root.name}") from exc
        except TilingError as exc:
            raise InvalidStoreError(f"{self.root.name} is not a readable pyramid") from exc
        spec = self.reader.spec
        self.levels: tuple[LevelInfo, ...] = tuple(
            LevelInfo(*spec.level_size(k), spec.tile_width, spec.tile_height)
            for k in range(spec.level_count)
        )
        self.mpp: float | None = spec.mpp_x if spec.mpp_x and spec.mpp_x > 0 else None

    def downsample(self, level: int) -> float:
        """Level-0 pixels per pixel of ``level`` (x)."""
        return self.levels[0].width / self.levels[level].width

    def read_chunk_bytes(self, level: int, col: int, row: int) -> bytes | None:
        """The stored JPEG of tile (col, row), or None where the chunk was never written (glass)."""
        return self.reader.read_chunk_bytes(level, col, row)

    def read_region(
        self, level: int, x: int, y: int, width: int, height: int
    ) -> npt.NDArray[np.uint8]:
        """(height, width, 3) pixels of ``level`` at (x, y) in that level; white outside."""
        try:
            return self.reader.read_region(level, x, y, width, height)
        except TilingError as exc:
            raise InvalidStoreError(f"{self.root.name}: {exc}") from exc


def decode_jpeg(data: bytes) -> npt.NDArray[np.uint8]:
    """libjpeg-turbo decode (releases the GIL, so threads run in parallel)."""
    try:
        return _tiling_decode(data)
    except ChunkDecodeError as exc:
        raise InvalidStoreError(f"unreadable chunk: {exc}") from exc

"""The on-disk contract of an IAIN pyramid: OME-Zarr (NGFF 0.5) on Zarr v3.

Every package that reads or writes a pyramid goes through these names; change them here only.

::

    SLIDE.zarr/
      zarr.json            group; attributes {"ome": {version 0.5, multiscales, omero},
                                              "iain": {slide metadata, see ``IAIN_ATTR``}}
      0/ 1/ ... n/         arrays, shape (3, height_k, width_k) uint8, axes (c, y, x),
                           chunks (3, tile_height, tile_width), fill value 255 (white glass),
                           codecs [transpose(order=[1, 2, 0]), iain.jpeg]:
                           each chunk file is ONE standalone JPEG of tile_height x tile_width RGB,
                           so a tile server can send it to a browser without decoding.
                           level k is ceil(level k-1 / 2) on each side (the DeepZoom rule);
                           the last level fits in one tile.
      0/c/0/{row}/{col}    chunk key of tile (col, row): default "/" chunk key encoding
      labels/              NGFF labels written by inference/ (``labels/<model>/``)
      associated/          label / macro / thumbnail images: identifying, owner-only (0700),
                           never referenced by multiscales, never served by tile endpoints.

Edge chunks are full tiles padded past the image (zarr's regular grid); readers crop them.
Third-party readers: ``pip install iain`` registers the ``iain.jpeg`` codec through the
``zarr.codecs`` entry point, then ``zarr.open_group("SLIDE.zarr")["0"][:]`` works.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = [
    "ASSOCIATED_GROUP",
    "IAIN_ATTR",
    "JPEG_CODEC_NAME",
    "LABELS_GROUP",
    "PyramidSpec",
    "chunk_key",
    "level_count_for",
]

JPEG_CODEC_NAME = "iain.jpeg"
IAIN_ATTR = "iain"  # root attributes key holding IAIN's slide metadata
LABELS_GROUP = "labels"
ASSOCIATED_GROUP = "associated"
FILL_VALUE = 255


def chunk_key(level: int, col: int, row: int) -> str:
    """Store key of tile (col, row) of ``level`` (x = col, y = row)."""
    return f"{level}/c/0/{row}/{col}"


def level_count_for(width: int, height: int, tile_width: int, tile_height: int) -> int:
    """Levels from full resolution down to the first one that fits in a single tile."""
    count = 1
    while width > tile_width or height > tile_height:
        width, height = math.ceil(width / 2), math.ceil(height / 2)
        count += 1
    return count


@dataclass(frozen=True, slots=True)
class PyramidSpec:
    """Geometry of a pyramid: sizes in pixels, (width, height) order."""

    width: int
    height: int
    tile_width: int
    tile_height: int
    mpp_x: float | None = None
    mpp_y: float | None = None

    @property
    def level_count(self) -> int:
        return level_count_for(self.width, self.height, self.tile_width, self.tile_height)

    def level_size(self, level: int) -> tuple[int, int]:
        """(width, height) of ``level``."""
        if not 0 <= level < self.level_count:
            raise ValueError(f"level {level} not in 0..{self.level_count - 1}")
        width, height = self.width, self.height
        for _ in range(level):
            width, height = math.ceil(width / 2), math.ceil(height / 2)
        return width, height

    def grid(self, level: int) -> tuple[int, int]:
        """(columns, rows) of tiles at ``level``."""
        width, height = self.level_size(level)
        return math.ceil(width / self.tile_width), math.ceil(height / self.tile_height)

    def downsample(self, level: int) -> float:
        return float(2**level)

"""Read an IAIN pyramid: chunk bytes as stored (for the tile server) and decoded regions.

Local stores are read as plain files (one ``open`` + ``read`` per chunk, no zarr machinery on
the hot path); ``s3://`` stores go through zarr's ``FsspecStore``. Coordinates: ``x, y`` and
``width, height`` are pixels of the requested level; arrays are (height, width, 3) uint8.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tiling._metadata import ROOT_KEY
from tiling._sink import LocalSink, StoreSink
from tiling.codec import decode_jpeg
from tiling.config import TilingConfig
from tiling.errors import (
    ChunkDecodeError,
    CorruptPyramidError,
    InvalidLevelError,
    PyramidNotFoundError,
)
from tiling.layout import FILL_VALUE, IAIN_ATTR, PyramidSpec, chunk_key

__all__ = ["PyramidReader"]

RGB = npt.NDArray[np.uint8]
MAX_REGION_PIXELS = 1 << 28  # 268 Mpx (~800 MB RGB): refuse before allocating


class PyramidReader:
    """An opened pyramid (local directory or ``s3://`` URL); cheap to keep open, thread-safe."""

    def __init__(self, location: str | Path, *, config: TilingConfig | None = None) -> None:
        text = str(location)
        self.location = text
        if text.startswith("s3://"):
            from zarr.storage import FsspecStore

            options = dict((config or TilingConfig()).s3_options)
            store = FsspecStore.from_url(text.rstrip("/"), storage_options=options, read_only=True)
            self._sink: LocalSink | StoreSink = StoreSink(store)
        else:
            self._sink = LocalSink(Path(text))
        raw = self._sink.read(ROOT_KEY)
        if raw is None:
            raise PyramidNotFoundError(f"no pyramid at {text} (missing {ROOT_KEY})")
        try:
            document = json.loads(raw)
            attrs: dict[str, Any] = document["attributes"]
            iain = attrs[IAIN_ATTR]
            mpp = iain.get("mpp") or {}
            self.spec = PyramidSpec(
                width=int(iain["width"]),
                height=int(iain["height"]),
                tile_width=int(iain["tile_width"]),
                tile_height=int(iain["tile_height"]),
                mpp_x=mpp.get("x"),
                mpp_y=mpp.get("y"),
            )
            datasets = attrs["ome"]["multiscales"][0]["datasets"]
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise CorruptPyramidError(f"{text}: unreadable root metadata ({exc})") from exc
        if len(datasets) != self.spec.level_count:
            raise CorruptPyramidError(
                f"{text}: {len(datasets)} levels in multiscales, geometry says "
                f"{self.spec.level_count}"
            )
        self.metadata: dict[str, Any] = attrs

    @property
    def level_count(self) -> int:
        return self.spec.level_count

    def _check_tile(self, level: int, col: int, row: int) -> None:
        if not 0 <= level < self.spec.level_count:
            raise InvalidLevelError(f"level {level} not in 0..{self.spec.level_count - 1}")
        cols, rows = self.spec.grid(level)
        if not (0 <= col < cols and 0 <= row < rows):
            raise InvalidLevelError(
                f"tile ({col}, {row}) not in level {level}'s {cols}x{rows} grid"
            )

    def read_chunk_bytes(self, level: int, col: int, row: int) -> bytes | None:
        """The stored JPEG of tile (col, row), as is; None for a chunk never written (all white)."""
        self._check_tile(level, col, row)
        return self._sink.read(chunk_key(level, col, row))

    def read_tile(self, level: int, col: int, row: int) -> RGB:
        """Decoded tile (col, row), cropped to the image (edge tiles are smaller)."""
        self._check_tile(level, col, row)
        width, height = self.spec.level_size(level)
        tw, th = self.spec.tile_width, self.spec.tile_height
        w, h = min(tw, width - col * tw), min(th, height - row * th)
        return self.read_region(level, col * tw, row * th, w, h)

    def read_region(self, level: int, x: int, y: int, width: int, height: int) -> RGB:
        """Pixels of ``level`` in [x, x + width) x [y, y + height); outside the image is white."""
        if not 0 <= level < self.spec.level_count:
            raise InvalidLevelError(f"level {level} not in 0..{self.spec.level_count - 1}")
        if width <= 0 or height <= 0 or width * height > MAX_REGION_PIXELS:
            raise InvalidLevelError(f"region {width}x{height} is empty or too large")
        out = np.full((height, width, 3), FILL_VALUE, dtype=np.uint8)
        level_w, level_h = self.spec.level_size(level)
        tw, th = self.spec.tile_width, self.spec.tile_height
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + width, level_w), min(y + height, level_h)
        if x0 >= x1 or y0 >= y1:
            return out
        for row in range(y0 // th, math.ceil(y1 / th)):
            for col in range(x0 // tw, math.ceil(x1 / tw)):
                data = self._sink.read(chunk_key(level, col, row))
                if data is None:
                    continue
                try:
                    tile = decode_jpeg(data)
                except ChunkDecodeError as exc:
                    raise ChunkDecodeError(f"level {level} tile ({col}, {row}): {exc}") from exc
                # intersection of this tile with the wanted, in-image window (level coordinates)
                ix0, iy0 = max(x0, col * tw), max(y0, row * th)
                ix1, iy1 = min(x1, (col + 1) * tw), min(y1, (row + 1) * th)
                out[iy0 - y : iy1 - y, ix0 - x : ix1 - x] = tile[
                    iy0 - row * th : iy1 - row * th, ix0 - col * tw : ix1 - col * tw, :3
                ]
        return out

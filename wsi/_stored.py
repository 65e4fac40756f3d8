"""Raw access to the compressed tiles a TIFF stores, as standalone JPEG files.

A TIFF JPEG tile is an abbreviated stream: its quantisation and Huffman tables live once in the
``JPEGTables`` tag. We splice those tables after the tile's SOI so every tile decodes alone, and
when the TIFF says Photometric=RGB (Aperio does: the JPEG holds RGB, not YCbCr) we add an Adobe
APP14 marker with transform=0, the one signal every decoder (libjpeg, browsers, PIL) honours.

Offsets and byte counts are read once per level; each tile is then one ``os.pread``.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import CorruptSlideError, InvalidRegionError, UnreadableRegionError
from .reader import StoredTiling

__all__ = ["ADOBE_APP14_RGB", "TiffStoredTiles", "merge_jpeg_tables", "white_jpeg"]

# APP14 "Adobe", version 100, flags 0/0, transform 0 (components are RGB, not YCbCr).
ADOBE_APP14_RGB = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00"
_SOI, _EOI = b"\xff\xd8", b"\xff\xd9"
_PHOTOMETRIC_RGB, _PHOTOMETRIC_YCBCR = 2, 6
_COMPRESSION_JPEG = 7


def merge_jpeg_tables(tile: bytes, tables: bytes | None, *, rgb: bool) -> bytes:
    """A standalone JPEG from an abbreviated TIFF tile and the ``JPEGTables`` stream."""
    if not tile.startswith(_SOI):
        raise UnreadableRegionError("stored tile does not start with a JPEG SOI marker")
    body = b""
    if tables:
        if not (tables.startswith(_SOI) and tables.endswith(_EOI)):
            raise CorruptSlideError("JPEGTables is not an SOI ... EOI stream")
        body = tables[2:-2]
    marker = ADOBE_APP14_RGB if rgb and ADOBE_APP14_RGB[:11] not in tile[:64] else b""
    return _SOI + marker + body + tile[2:]


_white_cache: dict[tuple[int, int, bool], bytes] = {}


def white_jpeg(width: int, height: int, *, rgb: bool = False) -> bytes:
    """A white tile, standing in for tiles a scanner left empty (byte count 0)."""
    key = (width, height, rgb)
    if key not in _white_cache:
        import imagecodecs

        data = bytes(imagecodecs.jpeg8_encode(np.full((height, width, 3), 255, np.uint8), level=90))
        _white_cache[key] = data
    return _white_cache[key]


@dataclass(frozen=True, slots=True)
class _LevelTiles:
    tiling: StoredTiling
    offsets: list[int]  # Python ints: indexing a list is several times faster than numpy here
    counts: list[int]
    tables: bytes | None
    rgb: bool
    prefix: bytes  # SOI + APP14 (when RGB) + the tables' body: what precedes tile[2:]


class TiffStoredTiles:
    """Maps a reader's levels to tiled JPEG TIFF pages of the same size, then serves raw tiles.

    ``level_dimensions`` are the reader's (width, height) per level; a level without a tiled,
    baseline-JPEG, 3-sample, chunky page of exactly that size has no stored tiling.
    """

    def __init__(self, path: Path, level_dimensions: tuple[tuple[int, int], ...]) -> None:
        import tifffile

        self.path = path
        self._levels: dict[int, _LevelTiles | None] = {}
        self._lock = threading.Lock()
        self._fd = os.open(path, os.O_RDONLY)
        self._size = os.fstat(self._fd).st_size
        try:
            with tifffile.TiffFile(path) as tif:
                by_size: dict[tuple[int, int], _LevelTiles] = {}
                # main-chain pages, then pyramid levels kept in SubIFDs (OME-TIFF)
                pages = list(tif.pages) + [
                    page for series in tif.series for lvl in series.levels for page in lvl.pages
                ]
                for page in pages:
                    if not isinstance(page, tifffile.TiffPage):
                        continue
                    tiles = self._describe(page)
                    if tiles is not None:
                        key = (int(page.imagewidth), int(page.imagelength))
                        by_size.setdefault(key, tiles)
        except (tifffile.TiffFileError, OSError, ValueError, IndexError) as exc:
            os.close(self._fd)
            raise CorruptSlideError(f"{path.name}: cannot index stored tiles ({exc})") from exc
        for level, dims in enumerate(level_dimensions):
            self._levels[level] = by_size.get(dims)

    @staticmethod
    def _describe(page: object) -> _LevelTiles | None:
        import tifffile

        assert isinstance(page, tifffile.TiffPage)
        if not page.is_tiled or page.compression != _COMPRESSION_JPEG:
            return None
        if page.samplesperpixel != 3 or page.planarconfig != 1 or page.imagedepth != 1:
            return None
        if page.photometric not in (_PHOTOMETRIC_RGB, _PHOTOMETRIC_YCBCR):
            return None
        tw, th = int(page.tilewidth), int(page.tilelength)
        cols = -(-int(page.imagewidth) // tw)
        rows = -(-int(page.imagelength) // th)
        offsets = [int(v) for v in page.dataoffsets]
        counts = [int(v) for v in page.databytecounts]
        if len(offsets) < cols * rows or len(counts) < cols * rows:
            return None
        tables = bytes(page.jpegtables) if page.jpegtables is not None else None
        rgb = page.photometric == _PHOTOMETRIC_RGB
        prefix = merge_jpeg_tables(_SOI, tables, rgb=rgb)  # an empty "tile" yields the prefix
        return _LevelTiles(
            StoredTiling(tw, th, "jpeg", cols, rows), offsets, counts, tables, rgb, prefix
        )

    def tiling(self, level: int) -> StoredTiling | None:
        entry = self._levels.get(level)
        return entry.tiling if entry is not None else None

    def read(self, level: int, col: int, row: int) -> bytes:
        """Tile (col, row) of ``level`` as a standalone JPEG."""
        entry = self._levels.get(level)
        if entry is None:
            raise InvalidRegionError(f"{self.path.name}: level {level} has no stored JPEG tiles")
        t = entry.tiling
        if not (0 <= col < t.columns and 0 <= row < t.rows):
            raise InvalidRegionError(
                f"tile ({col}, {row}) not in 0..{t.columns - 1} x 0..{t.rows - 1} of level {level}"
            )
        index = row * t.columns + col
        offset, count = entry.offsets[index], entry.counts[index]
        if count == 0:
            return white_jpeg(t.tile_width, t.tile_height)
        if offset + count > self._size:
            raise CorruptSlideError(f"{self.path.name}: tile {index} lies past the end of the file")
        data = os.pread(self._fd, count, offset)
        if len(data) != count:
            raise UnreadableRegionError(f"{self.path.name}: short read of tile {index}")
        if not data.startswith(_SOI):
            raise UnreadableRegionError(f"{self.path.name}: tile {index} is not a JPEG stream")
        if entry.rgb and ADOBE_APP14_RGB[:11] in data[:64]:  # already marked: keep it as is
            return merge_jpeg_tables(data, entry.tables, rgb=True)
        return b"".join((entry.prefix, memoryview(data)[2:]))

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

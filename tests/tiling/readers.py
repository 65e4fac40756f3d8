"""Small real SlideReader implementations for the tiling tests (until wsi's backends land).

``ArrayReader`` serves a numpy array (exact pixels, any geometry); ``TiffJpegReader`` serves level 0
of a tiled JPEG TIFF (tifffile-written or Aperio SVS) with raw stored-tile access: JPEG tables
merged and, for RGB-photometric tiles (Aperio), an Adobe APP14 marker saying "no colour transform".
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt
import tifffile

from wsi.errors import UnreadableRegionError
from wsi.reader import Mpp, MppSource, StoredTiling

RGB = npt.NDArray[np.uint8]
REPO_ROOT = Path(__file__).resolve().parents[2]
ADOBE_NO_TRANSFORM = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00"


class ArrayReader:
    """A slide made of one in-memory (h, w, 3) array; ``path`` is any real file (hashed)."""

    backend = "array"
    vendor = "test"

    def __init__(
        self,
        pixels: RGB,
        path: Path,
        *,
        mpp: float | None = 0.5,
        fail_at: tuple[int, int] | None = None,
        associated: Mapping[str, RGB] | None = None,
    ) -> None:
        self.pixels = pixels
        self.path = path
        self._mpp = mpp
        self.fail_at = fail_at  # level-0 (x, y) whose read raises, like a corrupt tile
        self._associated = dict(associated or {})
        self.reads = 0

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return ((self.pixels.shape[1], self.pixels.shape[0]),)

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return (1.0,)

    @property
    def tile_size(self) -> tuple[int, int]:
        return (256, 256)

    @property
    def mpp(self) -> Mpp:
        if self._mpp is None:
            return Mpp.missing()
        return Mpp(self._mpp, self._mpp, MppSource.VENDOR)

    @property
    def objective_power(self) -> float | None:
        return 20.0

    @property
    def icc_profile(self) -> bytes | None:
        return b"fake-icc"

    @property
    def associated_images(self) -> tuple[str, ...]:
        return tuple(self._associated)

    @property
    def properties(self) -> Mapping[str, str]:
        return {}

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> RGB:
        x, y = location
        w, h = size
        if self.fail_at is not None and (x, y) == self.fail_at:
            raise UnreadableRegionError(f"corrupt tile at ({x}, {y})")
        self.reads += 1
        out = np.full((h, w, 3), 255, dtype=np.uint8)
        part = self.pixels[y : y + h, x : x + w]
        out[: part.shape[0], : part.shape[1]] = part
        return out

    def read_associated(self, name: str) -> RGB:
        return self._associated[name]

    def stored_tiling(self, level: int) -> StoredTiling | None:
        return None

    def read_stored_tile(self, level: int, col: int, row: int) -> bytes:
        raise UnreadableRegionError("no stored tiles")

    def close(self) -> None:
        pass


class TiffJpegReader:
    """Level 0 of a tiled JPEG TIFF, with verbatim stored tiles (the copy path)."""

    backend = "test-tiff"
    vendor = "generic-tiff"

    def __init__(self, path: Path, *, mpp: float | None = 0.499) -> None:
        self.path = path
        self._tiff = tifffile.TiffFile(path)
        self._page = self._tiff.pages[0]
        assert isinstance(self._page, tifffile.TiffPage)
        self._fd = os.open(path, os.O_RDONLY)
        self._mpp = mpp
        self._pixels: RGB | None = None

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return ((self._page.imagewidth, self._page.imagelength),)

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return (1.0,)

    @property
    def tile_size(self) -> tuple[int, int]:
        return (self._page.tilewidth, self._page.tilelength)

    @property
    def mpp(self) -> Mpp:
        return Mpp(self._mpp, self._mpp, MppSource.VENDOR) if self._mpp else Mpp.missing()

    @property
    def objective_power(self) -> float | None:
        return None

    @property
    def icc_profile(self) -> bytes | None:
        return None

    @property
    def associated_images(self) -> tuple[str, ...]:
        return ()

    @property
    def properties(self) -> Mapping[str, str]:
        return {}

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> RGB:
        if self._pixels is None:
            self._pixels = np.asarray(self._page.asarray(), dtype=np.uint8)
        x, y = location
        w, h = size
        out = np.full((h, w, 3), 255, dtype=np.uint8)
        part = self._pixels[y : y + h, x : x + w]
        out[: part.shape[0], : part.shape[1]] = part
        return out

    def read_associated(self, name: str) -> RGB:
        raise KeyError(name)

    def stored_tiling(self, level: int) -> StoredTiling | None:
        page = self._page
        if level != 0 or not page.is_tiled or page.compression != 7:
            return None
        return StoredTiling(
            page.tilewidth,
            page.tilelength,
            "jpeg",
            math.ceil(page.imagewidth / page.tilewidth),
            math.ceil(page.imagelength / page.tilelength),
        )

    def read_stored_tile(self, level: int, col: int, row: int) -> bytes:
        page = self._page
        index = row * math.ceil(page.imagewidth / page.tilewidth) + col
        tile = os.pread(self._fd, page.databytecounts[index], page.dataoffsets[index])
        head = b"\xff\xd8"
        if page.photometric == 2:  # RGB stored without the YCbCr transform
            head += ADOBE_NO_TRANSFORM
        tables = page.jpegtables
        if tables:
            return head + bytes(tables[2:-2]) + tile[2:]
        return head + tile[2:]

    def close(self) -> None:
        os.close(self._fd)
        self._tiff.close()


class SyntheticReader(ArrayReader):
    """Pixels computed per request (no full-slide array): for memory and kill-9 tests.

    ``delay_s`` slows every region read so a test can kill a conversion mid-way.
    """

    def __init__(self, width: int, height: int, path: Path, *, delay_s: float = 0.0) -> None:
        super().__init__(np.zeros((1, 1, 3), np.uint8), path)
        self.width = width
        self.height = height
        self.delay_s = delay_s

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return ((self.width, self.height),)

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> RGB:
        if self.delay_s:
            import time

            time.sleep(self.delay_s)
        x, y = location
        w, h = size
        return synthetic_pixels(x, y, w, h)


def synthetic_pixels(x: int, y: int, w: int, h: int) -> RGB:
    """Smooth, JPEG-friendly pattern defined everywhere (so any region is reproducible)."""
    yy, xx = np.mgrid[y : y + h, x : x + w]
    out = np.empty((h, w, 3), np.uint8)
    out[:, :, 0] = (128 + 100 * np.sin(xx / 97.0)).astype(np.uint8)
    out[:, :, 1] = (128 + 100 * np.cos(yy / 61.0)).astype(np.uint8)
    out[:, :, 2] = ((xx + yy) // 16 % 256).astype(np.uint8)
    return out

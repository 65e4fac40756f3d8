"""Slides written with tifffile into tmp_path: exact pixels and crafted breakage.

Each crafted file is a valid TIFF first, then one field is patched, so the test exercises exactly
the defect it names (and nothing else).
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import tifffile

TILE = 64


def gradient(height: int, width: int) -> np.ndarray:
    """Smooth, non-trivial RGB pixels (JPEG-friendly, so PSNR comparisons mean something)."""
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack(
        [(xx * 255 // max(width - 1, 1)), (yy * 255 // max(height - 1, 1)), (xx + yy) % 256],
        axis=-1,
    ).astype(np.uint8)


def write_tiled(path: Path, image: np.ndarray, *, compression: str | None = None) -> Path:
    """A one-level tiled RGB TIFF (classic, little endian) with 64 px tiles."""
    tifffile.imwrite(
        path,
        image,
        tile=(TILE, TILE),
        photometric="rgb",
        compression=compression,
        bigtiff=False,
        resolution=(1e4 / 0.5, 1e4 / 0.5),
        resolutionunit="CENTIMETER",
    )
    return path


@pytest.fixture
def known_tiff(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A 200 x 150 px uncompressed tiled TIFF (sizes not a multiple of the tile), mpp 0.5."""
    image = gradient(150, 200)
    return write_tiled(tmp_path / "known.tif", image), image


@pytest.fixture
def huge_tiff(tmp_path: Path) -> Path:
    """Declares 10^6 x 10^6 px (10^12 px) but stores one 64 px tile."""
    path = write_tiled(tmp_path / "huge.tif", gradient(TILE, TILE))
    with tifffile.TiffFile(path, mode="r+b") as tif:
        tif.pages.first.tags["ImageWidth"].overwrite(1_000_000)
        tif.pages.first.tags["ImageLength"].overwrite(1_000_000)
    return path


@pytest.fixture
def loop_tiff(tmp_path: Path) -> Path:
    """Two directories whose chain points from the second back to the first."""
    path = tmp_path / "loop.tif"
    with tifffile.TiffWriter(path, bigtiff=False) as tw:
        for _ in range(2):
            tw.write(gradient(TILE, TILE), tile=(TILE, TILE), photometric="rgb")
    with tifffile.TiffFile(path) as tif:
        first, second = tif.pages[0].offset, tif.pages[1].offset
    with path.open("r+b") as fh:
        fh.seek(second)
        (count,) = struct.unpack("<H", fh.read(2))
        fh.seek(second + 2 + 12 * count)
        fh.write(struct.pack("<I", first))
    return path


@pytest.fixture
def offsets_past_end_tiff(tmp_path: Path) -> Path:
    """Tile 3 of 4 points 1 MiB past the end of the file."""
    path = write_tiled(tmp_path / "past-end.tif", gradient(2 * TILE, 2 * TILE))
    size = path.stat().st_size
    with tifffile.TiffFile(path, mode="r+b") as tif:
        tag = tif.pages.first.tags["TileOffsets"]
        offsets = list(tag.value)
        offsets[2] = size + (1 << 20)
        tag.overwrite(offsets)
    return path


@pytest.fixture
def corrupt_middle_jpeg_tiff(tmp_path: Path) -> Path:
    """3 x 3 JPEG tiles; the middle tile's first marker gets a bogus length."""
    path = write_tiled(
        tmp_path / "corrupt-middle.tif", gradient(3 * TILE, 3 * TILE), compression="jpeg"
    )
    with tifffile.TiffFile(path) as tif:
        offset = tif.pages.first.dataoffsets[4]
    with path.open("r+b") as fh:
        fh.seek(offset + 2)
        fh.write(b"\xff\xdb\x00\x00")  # DQT of length 0: "Bogus marker length"
    return path

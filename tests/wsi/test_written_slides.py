"""tifffile-written slides with known pixels: exact reads, pyramids, stored-tile JPEG merging."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

import wsi
from wsi import MppSource
from wsi._stored import ADOBE_APP14_RGB, merge_jpeg_tables

from .conftest import TILE, gradient
from .test_conformance import psnr


@pytest.mark.parametrize("backend", ["openslide", "tifffile"])
def test_known_pixels_exact_with_edges(known_tiff: tuple[Path, np.ndarray], backend: str) -> None:
    path, image = known_tiff
    with wsi.open_slide(path, backend=backend) as reader:
        assert reader.vendor == "generic-tiff"
        assert reader.level_dimensions == ((200, 150),)
        assert reader.tile_size == (TILE, TILE)
        assert reader.mpp.source is MppSource.TIFF_RESOLUTION
        assert reader.mpp.x == pytest.approx(0.5)
        np.testing.assert_array_equal(reader.read_region((0, 0), 0, (200, 150)), image)
        # the last, partial tile column and row: 200 = 3 * 64 + 8, 150 = 2 * 64 + 22
        np.testing.assert_array_equal(
            reader.read_region((190, 140), 0, (10, 10)), image[140:150, 190:200]
        )
        assert reader.stored_tiling(0) is None  # uncompressed: nothing to copy as JPEG


def test_mpp_override(known_tiff: tuple[Path, np.ndarray]) -> None:
    path, _ = known_tiff
    with wsi.open_slide(path, mpp_override=0.25) as reader:
        assert reader.mpp == wsi.Mpp(0.25, 0.25, MppSource.OVERRIDE)
    with pytest.raises(wsi.InvalidRegionError, match="outside"):
        wsi.open_slide(path, mpp_override=352.8)


def _ome_pyramid(path: Path, image: np.ndarray, *, bigtiff: bool) -> None:
    with tifffile.TiffWriter(path, bigtiff=bigtiff, ome=True) as tw:
        opts = {"tile": (TILE, TILE), "photometric": "rgb", "compression": "jpeg"}
        tw.write(
            image,
            subifds=2,
            metadata={"PhysicalSizeX": 0.25, "PhysicalSizeY": 0.25, "axes": "YXS"},
            **opts,
        )
        for factor in (2, 4):
            tw.write(image[::factor, ::factor], subfiletype=1, **opts)


@pytest.mark.parametrize("bigtiff", [False, True])
def test_ome_pyramid_in_subifds(tmp_path: Path, bigtiff: bool) -> None:
    image = gradient(300, 400)
    path = tmp_path / "pyramid.ome.tif"
    _ome_pyramid(path, image, bigtiff=bigtiff)
    assert wsi.OpenSlideReader.can_open(path) is False  # OpenSlide does not read OME pyramids
    with wsi.open_slide(path) as reader:
        assert (reader.backend, reader.vendor) == ("tifffile", "ome")
        assert reader.level_dimensions == ((400, 300), (200, 150), (100, 75))
        assert reader.level_downsamples == (1.0, 2.0, 4.0)
        assert reader.mpp == wsi.Mpp(0.25, 0.25, MppSource.VENDOR)
        assert psnr(reader.read_region((0, 0), 0, (400, 300)), image) >= 30  # JPEG q75
        assert psnr(reader.read_region((0, 0), 1, (200, 150)), image[::2, ::2]) >= 30
        for level in range(3):
            tiling = reader.stored_tiling(level)
            assert tiling is not None
            col, row = tiling.columns - 1, tiling.rows - 1  # the clipped corner tile
            tile = reader.read_stored_tile(level, col, row)
            assert tile.startswith(b"\xff\xd8") and tile.endswith(b"\xff\xd9")
            decoded = np.asarray(Image.open(io.BytesIO(tile)).convert("RGB"))
            w, h = reader.level_dimensions[level]
            x, y = col * TILE, row * TILE
            ds = reader.level_downsamples[level]
            pixels = reader.read_region((int(x * ds), int(y * ds)), level, (w - x, h - y))
            assert psnr(decoded[: h - y, : w - x], pixels) >= 45


def test_merge_jpeg_tables_marks_rgb() -> None:
    tables = b"\xff\xd8\xff\xdb\x00\x03\x00\xff\xd9"
    tile = b"\xff\xd8\xff\xc0rest\xff\xd9"
    assert (
        merge_jpeg_tables(tile, tables, rgb=False)
        == b"\xff\xd8\xff\xdb\x00\x03\x00\xff\xc0rest\xff\xd9"
    )
    merged = merge_jpeg_tables(tile, tables, rgb=True)
    assert merged.startswith(b"\xff\xd8" + ADOBE_APP14_RGB + b"\xff\xdb")
    with pytest.raises(wsi.UnreadableRegionError):
        merge_jpeg_tables(b"garbage", tables, rgb=True)


def test_svs_tiles_need_the_adobe_marker(slides_dir: Path) -> None:
    """Aperio JPEG holds RGB: without APP14 a decoder applies YCbCr maths and colours go wrong."""
    with wsi.open_slide(slides_dir / "CMU-1-Small-Region.svs") as reader:
        merged = reader.read_stored_tile(0, 4, 6)
        pixels = reader.read_region((4 * 240, 6 * 240), 0, (240, 240))
    without = merged.replace(ADOBE_APP14_RGB, b"", 1)
    decoded = [np.asarray(Image.open(io.BytesIO(d)).convert("RGB")) for d in (merged, without)]
    assert psnr(decoded[0], pixels) >= 45
    assert psnr(decoded[1], pixels) < 25


class TestArraySlide:
    def test_levels_and_reads(self) -> None:
        image = gradient(100, 130)
        reader = wsi.ArraySlide(image, mpp=0.5, levels=3)
        assert isinstance(reader, wsi.SlideReader)
        assert reader.level_dimensions == ((130, 100), (65, 50), (33, 25))
        assert reader.mpp == wsi.Mpp(0.5, 0.5, MppSource.VENDOR)
        np.testing.assert_array_equal(reader.read_region((0, 0), 0, (130, 100)), image)
        half = reader.read_region((0, 0), 1, (65, 50)).astype(int)
        expected = image.reshape(50, 2, 65, 2, 3).mean(axis=(1, 3))
        assert np.abs(half - expected).max() <= 1
        edge = reader.read_region((120, 90), 0, (20, 20))
        np.testing.assert_array_equal(edge[:10, :10], image[90:, 120:])
        assert (edge[10:] == 255).all() and (edge[:, 10:] == 255).all()
        assert reader.stored_tiling(0) is None

    def test_metadata_and_errors(self) -> None:
        label = np.zeros((10, 20, 3), np.uint8)
        reader = wsi.ArraySlide(np.zeros((8, 8), np.uint8), associated={"label": label})
        assert reader.mpp.source is MppSource.MISSING
        assert reader.associated_images == ("label",)
        assert reader.read_associated("label").shape == (10, 20, 3)
        assert wsi.describe(reader).level_dimensions == ((8, 8),)
        with pytest.raises(wsi.InvalidRegionError):
            reader.read_region((0, 0), 1, (4, 4))
        with pytest.raises(wsi.InvalidRegionError):
            wsi.ArraySlide(np.zeros((4, 4, 4), np.uint8))
        with pytest.raises(wsi.InvalidRegionError):
            reader.read_stored_tile(0, 0, 0)

    def test_image_backend_is_opt_in(self, bad_slides_dir: Path) -> None:
        png = bad_slides_dir / "png-renamed.svs"
        with pytest.raises(wsi.UnsupportedFormatError, match="PNG"):
            wsi.open_slide(png)
        with wsi.open_slide(png, backend="image") as reader:
            assert reader.level_dimensions == ((574, 768),)
            assert reader.read_region((0, 0), 0, (8, 8)).shape == (8, 8, 3)


def test_empty_stored_tile_is_a_white_jpeg(tmp_path: Path) -> None:
    """Scanners leave tiles outside the scanned area empty (byte count 0)."""
    path = tmp_path / "sparse.tif"
    tifffile.imwrite(
        path, gradient(2 * TILE, 2 * TILE), tile=(TILE, TILE), photometric="rgb", compression="jpeg"
    )
    with tifffile.TiffFile(path, mode="r+b") as tif:
        tag = tif.pages.first.tags["TileByteCounts"]
        counts = list(tag.value)
        counts[3] = 0
        tag.overwrite(counts)
    with wsi.open_slide(path, backend="tifffile") as reader:
        white = np.asarray(Image.open(io.BytesIO(reader.read_stored_tile(0, 1, 1))).convert("RGB"))
        assert white.shape == (TILE, TILE, 3) and white.min() >= 250
        first = np.asarray(Image.open(io.BytesIO(reader.read_stored_tile(0, 0, 0))).convert("RGB"))
        assert psnr(first, reader.read_region((0, 0), 0, (TILE, TILE))) >= 45

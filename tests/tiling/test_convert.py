"""build_pyramid: correctness on real and synthetic slides, geometry, metadata, codec."""

from __future__ import annotations

import json
from contextlib import closing
from pathlib import Path

import numpy as np
import openslide
import pytest
import tifffile
import zarr

from tests.tiling.conftest import block_pixels
from tests.tiling.helpers import psnr, reference_levels
from tests.tiling.readers import ArrayReader, TiffJpegReader
from tiling.codec import JpegCodec, decode_jpeg
from tiling.convert import Progress, build_pyramid
from tiling.layout import chunk_key, level_count_for
from tiling.read import PyramidReader


def test_svs_level0_is_copied_bit_identical_and_matches_openslide(
    cmu_svs: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    reader = TiffJpegReader(cmu_svs)
    request.addfinalizer(reader.close)
    out = tmp_path / "cmu.zarr"
    spec = build_pyramid(reader, out)
    assert (spec.tile_width, spec.tile_height) == (240, 240)  # the stored tile size, kept
    cols, rows = spec.grid(0)
    for col, row in [(0, 0), (4, 6), (cols - 1, rows - 1)]:
        chunk = (out / chunk_key(0, col, row)).read_bytes()
        assert chunk == reader.read_stored_tile(0, col, row)
    pyramid = PyramidReader(out)
    assert pyramid.metadata["iain"]["level0"] == "copied"
    with openslide.OpenSlide(cmu_svs) as slide:
        expected = np.asarray(slide.read_region((0, 0), 0, slide.dimensions).convert("RGB"))
    level0 = pyramid.read_region(0, 0, 0, spec.width, spec.height)
    assert psnr(level0, expected) >= 40.0
    # reduced levels against an area-averaged downsample of level 0
    references = reference_levels(expected, spec.level_count)
    for level in range(1, spec.level_count):
        width, height = spec.level_size(level)
        got = pyramid.read_region(level, 0, 0, width, height)
        assert got.shape == references[level].shape
        assert psnr(got, references[level]) >= 35.0, level


def test_zarr_python_reads_the_store(cmu_svs: Path, tmp_path: Path) -> None:
    out = tmp_path / "cmu.zarr"
    with closing(TiffJpegReader(cmu_svs)) as reader:
        build_pyramid(reader, out)
    group = zarr.open_group(out, mode="r")
    array = group["0"]
    assert isinstance(array, zarr.Array)
    assert array.shape == (3, 2967, 2220) and array.chunks == (3, 240, 240)
    window = array[:, 500:700, 300:650]
    direct = PyramidReader(out).read_region(0, 300, 500, 350, 200)
    assert np.array_equal(np.moveaxis(np.asarray(window), 0, 2), direct)
    codecs = json.loads((out / "0" / "zarr.json").read_text())["codecs"]
    assert [c["name"] for c in codecs] == ["transpose", "iain.jpeg"]
    assert JpegCodec.from_dict(codecs[1]) == JpegCodec(quality=90, subsampling="444")


def test_edge_tiles_exact_when_re_encoded(source_file: Path, tmp_path: Path) -> None:
    width, height = 1001, 701  # not multiples of 256, odd at level 0 and at level 1
    pixels = block_pixels(width, height, block=32)
    out = tmp_path / "edges.zarr"
    spec = build_pyramid(ArrayReader(pixels, source_file), out)
    assert spec.level_count == level_count_for(width, height, 256, 256) == 3
    assert [spec.level_size(k) for k in range(3)] == [(1001, 701), (501, 351), (251, 176)]
    pyramid = PyramidReader(out)
    assert pyramid.metadata["iain"]["level0"] == "re-encoded"
    got = pyramid.read_region(0, 0, 0, width, height)
    # flat MCU blocks are near lossless, except the 8x8 blocks straddling image and padding
    assert np.abs(got[:696, :1000].astype(int) - pixels[:696, :1000]).max() <= 8
    assert psnr(got[-8:], pixels[-8:]) >= 35.0 and psnr(got[:, -8:], pixels[:, -8:]) >= 35.0
    # the last tile: its image part matches; its padding repeats the edge (no ringing)
    last = decode_jpeg((out / chunk_key(0, 3, 2)).read_bytes())
    assert last.shape == (256, 256, 3)
    assert psnr(last[: 701 - 512, : 1001 - 768], pixels[512:, 768:]) >= 35.0
    assert np.abs(last[-1, 0].astype(int) - pixels[-1, 768]).max() <= 8
    references = reference_levels(pixels, 3)
    for level in (1, 2):
        w, h = spec.level_size(level)
        reduced = pyramid.read_region(level, 0, 0, w, h).astype(int)
        assert psnr(reduced, references[level]) >= 35.0
        # the ceil rule at the odd edges: last row / column average only what exists (white
        # averaged in would be off by ~50), so they are as close as the level as a whole
        error = np.abs(reduced - references[level])
        assert error[-1].mean() < error.mean() + 1.0 and error[:, -1].mean() < error.mean() + 1.0
    # outside the image reads as white, inside the edge tile exactly the image
    corner = pyramid.read_region(0, 991, 691, 20, 20)
    assert np.array_equal(corner[:10, :10], got[691:, 991:])
    assert (corner[10:, :] == 255).all() and (corner[:, 10:] == 255).all()


def test_edge_tiles_exact_when_copied(jpeg_tiff: Path, tmp_path: Path) -> None:
    out = tmp_path / "copied.zarr"
    with closing(TiffJpegReader(jpeg_tiff)) as reader:
        spec = build_pyramid(reader, out)
    assert (spec.width, spec.height, spec.tile_width) == (1000, 700, 256)
    truth = tifffile.imread(jpeg_tiff)  # the same JPEG tiles, decoded by tifffile
    pyramid = PyramidReader(out)
    assert pyramid.metadata["iain"]["level0"] == "copied"
    assert np.array_equal(pyramid.read_region(0, 0, 0, 1000, 700), truth)
    references = reference_levels(truth, spec.level_count)
    for level in range(1, spec.level_count):
        w, h = spec.level_size(level)
        assert psnr(pyramid.read_region(level, 0, 0, w, h), references[level]) >= 35.0


def test_single_tile_slide_and_missing_mpp(source_file: Path, tmp_path: Path) -> None:
    pixels = block_pixels(100, 60)
    out = tmp_path / "one.zarr"
    spec = build_pyramid(ArrayReader(pixels, source_file, mpp=None), out)
    assert spec.level_count == 1
    attrs = PyramidReader(out).metadata
    assert attrs["iain"]["mpp"] == {"x": None, "y": None, "source": "missing"}
    assert "unit" not in attrs["ome"]["multiscales"][0]["axes"][1]


def test_metadata_and_associated_images(source_file: Path, tmp_path: Path) -> None:
    label = np.zeros((40, 30, 3), np.uint8)
    label[::2] = 255  # barcode-like stripes: must survive losslessly
    reader = ArrayReader(block_pixels(600, 500), source_file, associated={"label": label})
    events: list[Progress] = []
    out = tmp_path / "meta.zarr"
    build_pyramid(reader, out, progress=events.append)
    root = zarr.open_group(out, mode="r")
    ome = root.attrs["ome"]
    assert isinstance(ome, dict)
    scales = [d["coordinateTransformations"][0]["scale"] for d in ome["multiscales"][0]["datasets"]]
    assert scales == [[1.0, 0.5, 0.5], [1.0, 1.0, 1.0], [1.0, 2.0, 2.0]]
    iain = root.attrs["iain"]
    assert isinstance(iain, dict)
    assert iain["source_size"] == source_file.stat().st_size
    assert len(iain["source_sha256"]) == 64 and iain["icc_profile_base64"] == "ZmFrZS1pY2M="
    assert iain["mpp"]["source"] == "vendor" and iain["objective_power"] == 20.0
    assert (out / "associated").stat().st_mode & 0o777 == 0o700
    stored_label = root["associated/label"]
    assert isinstance(stored_label, zarr.Array)
    assert np.array_equal(np.asarray(stored_label[:]), label)
    assert all("associated" not in d["path"] for d in ome["multiscales"][0]["datasets"])
    assert events and events[-1].phase == "published" and events[-1].done == events[-1].total


@pytest.mark.parametrize("quality", [0, 101])
def test_codec_rejects_bad_quality(quality: int) -> None:
    with pytest.raises(ValueError, match="quality"):
        JpegCodec(quality=quality)

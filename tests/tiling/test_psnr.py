"""Reduced levels at a measured flat-table step: the floor holds, the metadata says so."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.tiling.helpers import psnr, reference_levels
from tiling import convert
from tiling.__main__ import main
from tiling._pixels import downsample2
from tiling.codec import decode_jpeg, encode_jpeg, encode_jpeg_flat
from tiling.config import TilingConfig
from tiling.convert import build_pyramid
from tiling.layout import chunk_key
from tiling.read import PyramidReader
from wsi import open_slide


def _build(slide: Path, out: Path, config: TilingConfig | None = None) -> PyramidReader:
    reader = open_slide(slide)
    try:
        build_pyramid(reader, out, config=config)
    finally:
        reader.close()
    return PyramidReader(out)


def _exact_psnr(pyramid: PyramidReader) -> list[float]:
    """Each reduced level against the exact area average of the stored level 0."""
    spec = pyramid.spec
    level0 = pyramid.read_region(0, 0, 0, spec.width, spec.height)
    references = reference_levels(level0, spec.level_count)
    return [
        psnr(pyramid.read_region(level, 0, 0, *spec.level_size(level)), references[level])
        for level in range(1, spec.level_count)
    ]


def test_measured_psnr_is_in_the_metadata_and_holds(cmu_svs: Path, tmp_path: Path) -> None:
    pyramid = _build(cmu_svs, tmp_path / "cmu.zarr")
    reduced = pyramid.metadata["iain"]["reduced_levels"]
    assert reduced["min_psnr_db"] == 35.5
    levels = reduced["levels"]
    assert [entry["level"] for entry in levels] == list(range(1, pyramid.spec.level_count))
    exact = _exact_psnr(pyramid)
    for entry, against_exact in zip(levels, exact, strict=True):
        assert 1 <= entry["step"] <= 24
        assert entry["psnr_db"] >= 35.5
        assert against_exact >= 35.0
        # measured against the converter's own pixels (level 1 from the scaled IDCT): close
        assert abs(entry["psnr_db"] - against_exact) < 0.5
    # the chunks carry the flat tables, 4:4:4, baseline (SOF0)
    data = (tmp_path / "cmu.zarr" / chunk_key(1, 0, 0)).read_bytes()
    with Image.open(io.BytesIO(data)) as image:
        assert set(image.quantization[0]) <= {int(levels[0]["step"]), int(levels[0]["step"]) + 1}
        assert [component[1:3] for component in image.layer] == [(1, 1)] * 3  # 4:4:4
    assert b"\xff\xc0" in data and b"\xff\xc2" not in data


def test_flat_tables_beat_standard_tables_per_byte(cmu_svs: Path) -> None:
    """At no more bytes than Q90 4:4:4, the flat step is closer to the pixels (PSNR)."""
    reader = open_slide(cmu_svs)
    try:  # level-1 tiles of real H&E as the converter makes them: 2x area averages
        tiles = [
            downsample2(reader.read_region((x, y), 0, (512, 512)), 512, 512)
            for x, y in ((512, 512), (1024, 1024), (512, 1536), (1024, 2048))
        ]
    finally:
        reader.close()
    standard = [encode_jpeg(tile, 90, "444") for tile in tiles]
    budget = sum(map(len, standard))
    sizes = {
        half / 2: sum(len(encode_jpeg_flat(t, half / 2)) for t in tiles) for half in range(2, 49)
    }
    step = min(step for step, size in sizes.items() if size <= budget)
    flat = [encode_jpeg_flat(tile, step) for tile in tiles]
    stacked = np.concatenate(tiles)
    got_flat = psnr(np.concatenate([decode_jpeg(d) for d in flat]), stacked)
    got_standard = psnr(np.concatenate([decode_jpeg(d) for d in standard]), stacked)
    assert got_flat > got_standard + 1.0, (step, got_flat, got_standard)


def test_fine_steps_encode_noise() -> None:
    """Step 1 on noise outgrows Pillow's 2 bytes/px buffer for Huffman optimisation."""
    noise = np.random.default_rng(1).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    for step in (1.0, 1.5, 4.0):
        assert psnr(decode_jpeg(encode_jpeg_flat(noise, step)), noise) > 40.0


@pytest.mark.parametrize(
    ("process_min_tiles", "coarse"), [(10**9, (1, 2, 3, 4)), (0, (1, 4)), (0, (4,))]
)
def test_a_level_below_the_floor_is_re_encoded_finer(
    cmu_svs: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    process_min_tiles: int,
    coarse: tuple[int, ...],
) -> None:
    """A sample that picked too coarse a step: the measured level misses, and is redone (by
    threads; by band processes; level 4 alone from the bands' level-3 quadrants)."""

    def too_coarse(patches: object, floor: float) -> list[float]:
        return [0.0] + [24.0 if level in coarse else 8.0 for level in range(1, 5)]

    monkeypatch.setattr(convert, "choose_steps", too_coarse)
    config = TilingConfig(process_min_tiles=process_min_tiles)
    pyramid = _build(cmu_svs, tmp_path / "cmu.zarr", config)
    levels = pyramid.metadata["iain"]["reduced_levels"]["levels"]
    assert any(entry["step"] < 24 for entry in levels)
    assert all(entry["psnr_db"] >= 35.5 for entry in levels)
    assert min(_exact_psnr(pyramid)) >= 35.0


def test_min_psnr_zero_encodes_reduced_levels_at_quality(cmu_svs: Path, tmp_path: Path) -> None:
    out = tmp_path / "q.zarr"
    assert main(["convert", str(cmu_svs), str(out), "--quiet", "--min-psnr", "0"]) == 0
    pyramid = PyramidReader(out)
    assert "reduced_levels" not in pyramid.metadata["iain"]
    with Image.open(io.BytesIO((out / chunk_key(1, 0, 0)).read_bytes())) as image:
        assert len(set(image.quantization[0])) > 2  # the standard (not flat) table


def test_cli_rejects_an_absurd_min_psnr(
    cmu_svs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["convert", str(cmu_svs), str(tmp_path / "o.zarr"), "--min-psnr", "99"]) == 2
    assert "min PSNR 99.0 dB" in capsys.readouterr().err
    assert not (tmp_path / "o.zarr").exists()

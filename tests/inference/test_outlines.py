"""Outlines traced band by band while the run goes on equal one pass over the finished mask."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import tifffile
import zarr
from scipy import ndimage

import inference.engine
from inference.engine import Engine, EngineOptions
from inference.outlines import RowTracer, mask_to_features, write_geojson
from tests.inference.helpers import PROTOTYPES, ColourModel, regions_image, spec
from viewer.cli import main as iain


def _noisy_mask(rng: np.random.Generator, height: int, width: int) -> npt.NDArray[np.uint8]:
    """Three classes in blobs of every size, holes, specks and a frame spanning every row."""
    mask = rng.integers(0, 3, (height, width)).astype(np.uint8)
    mask = ndimage.median_filter(mask, size=int(rng.integers(1, 7)))
    mask[:, :3] = 1  # one region from the first row to the last: waits for every band
    mask[-2:, :] = 1
    return mask


@pytest.mark.parametrize("seed", range(8))
def test_row_tracer_equals_one_pass_over_the_mask(seed: int) -> None:
    rng = np.random.default_rng(seed)
    height, width = (int(v) for v in rng.integers(40, 200, 2))
    mask = _noisy_mask(rng, height, width)
    toy = spec()
    expected = mask_to_features(mask, toy, 4.0, 0.5)
    tracer = RowTracer((height, width), toy, 4.0, 0.5)
    y = 0
    while y < height:  # bands of random heights, the mask pasted just before each
        band = int(rng.integers(1, 50))
        tracer.paste(0, y, mask[y : y + band])
        y += band
        tracer.advance(y)
    features = tracer.features()
    assert len(features) > 5
    assert json.dumps(features) == json.dumps(expected)


def _tiff_slide(tmp_path: Path) -> Path:
    """The known regions plus blocks of noise in the three colours, written with tifffile (tiled,
    uncompressed) and converted with ``iain convert``."""
    rgb, _ = regions_image(2048, 1536)
    noise = np.random.default_rng(0).integers(0, 3, (88, 188)).repeat(8, 0).repeat(8, 1)
    rgb[760:1464, 200:1704] = np.asarray(PROTOTYPES, dtype=np.uint8)[noise]  # 8 px blocks
    rgb[:, 20:40] = PROTOTYPES[1]  # an epithelium strip through every unit row
    tif = tmp_path / "slide.tif"
    tifffile.imwrite(tif, rgb, tile=(256, 256), photometric="rgb")
    store = tmp_path / "slide.zarr"
    assert iain(["convert", str(tif), str(store)]) == 0
    return store


@pytest.mark.parametrize(
    ("max_trace_pixels", "schedule"), [(None, "lockstep"), (300_000, "lockstep"), (None, "threads")]
)
def test_outlines_traced_during_the_run_equal_the_finished_level_traced_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, max_trace_pixels: int | None, schedule: str
) -> None:
    """The run's GeoJSON, byte for byte, against ``mask_to_features`` (the implementation that
    traced the stored level after the run) on that stored level; with a smaller trace budget the
    traced level is coarser than the inference level (each unit's mask is reduced)."""
    if max_trace_pixels is not None:
        monkeypatch.setattr(inference.engine, "MAX_TRACE_PIXELS", max_trace_pixels)

    def traced_after(*args: object) -> None:
        raise AssertionError("a whole run traces while it runs, not after")

    monkeypatch.setattr(inference.engine, "mask_to_features", traced_after)
    store = _tiff_slide(tmp_path)
    toy = spec(tile=96, overlap=32)
    options = EngineOptions(batch_size=8, unit_chunks=1, mpp_override=0.25, schedule=schedule)
    with Engine(ColourModel(toy, radius=1), toy, "cpu", options) as engine:
        result = engine.run(store)
    assert result.level == 1 and result.geojson is not None
    level = 1 if max_trace_pixels is None else 2  # 1024 x 768, then 512 x 384
    mask = np.asarray(zarr.open_array(str(store / "labels" / "toy" / str(level)), mode="r")[:])
    assert mask.shape == (1536 >> level, 2048 >> level) and set(np.unique(mask)) == {0, 1, 2}
    expected = tmp_path / "expected.geojson"
    write_geojson(expected, mask_to_features(mask, toy, 2.0**level, 0.25), toy)
    assert result.geojson.read_bytes() == expected.read_bytes()
    assert result.features == len(json.loads(expected.read_text())["features"]) > 10

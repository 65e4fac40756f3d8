"""The decoded-chunk cache: every window equals an independent read, each chunk is decoded once."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from inference._pyramid import SlidePyramid
from inference.engine import Engine, EngineOptions, make_plan
from tests.inference.helpers import ColourModel, spec, write_store

WIDTH, HEIGHT, TILE = 1600, 1400, 256


def _noise_store(tmp_path: Path, mpp: float) -> Path:
    """Noise (every pixel differs from its neighbours): a misplaced piece cannot go unseen."""
    rgb = np.random.default_rng(6).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    return write_store(tmp_path / "noise.zarr", rgb, tile=TILE, mpp=mpp)


def _windows(engine: Engine, store: Path, order: list[int] | None = None) -> list[torch.Tensor]:
    """The model-scale windows the producer reads, unit by unit (glass detection off)."""
    pyramid = SlidePyramid(store)
    plan = make_plan(pyramid, engine.spec, engine.options)
    units = plan.units()
    if order is not None:
        units = [units[i] for i in order]
    windows = []
    for work in engine._produce(pyramid, plan, units, None, 1.0):
        assert work.window is not None
        windows.append(work.window.clone())
    return windows


def _fresh_windows(
    store: Path, options: EngineOptions, order: list[int]
) -> tuple[list[torch.Tensor], int]:
    """The same windows, each read by a producer run of its own (nothing carried over), and
    the chunks that took."""
    toy = spec(tile=128, overlap=16)
    with Engine(ColourModel(toy), toy, "cpu", options) as fresh:
        windows = [window for index in order for window in _windows(fresh, store, [index])]
        return windows, fresh.chunks.decoded


@pytest.mark.parametrize("io", ["host", "device"])  # numpy pieces, or tensors on the device
def test_each_chunk_is_decoded_once_and_windows_equal_direct_reads(tmp_path: Path, io: str) -> None:
    store = _noise_store(tmp_path, mpp=0.5)
    toy = spec(tile=128, overlap=16)
    options = EngineOptions(unit_chunks=2, skip_glass=False, io=io)
    with Engine(ColourModel(toy), toy, "cpu", options) as engine:
        windows = _windows(engine, store)
        decoded = engine.chunks.decoded
    pyramid = SlidePyramid(store)
    plan = make_plan(pyramid, toy, options)
    assert plan.scale == 1.0 and plan.level == 0
    pad = plan.tile // 2 + 1
    chunks_per_window = 0
    for unit, window in zip(plan.units(), windows, strict=True):
        x, y = unit.x0 - pad, unit.y0 - pad
        w, h = unit.x1 - unit.x0 + 2 * pad, unit.y1 - unit.y0 + 2 * pad
        # tiling's reader (which, unlike the engine, whitens chunk pixels past the level's edge)
        inside = (slice(max(0, -y), HEIGHT - y), slice(max(0, -x), WIDTH - x))
        expected = pyramid.read_region(0, x, y, w, h)
        np.testing.assert_array_equal(window.permute(1, 2, 0).numpy()[inside], expected[inside])
        cols = min(7, math.ceil((x + w) / TILE)) - max(0, x // TILE)
        rows = min(6, math.ceil((y + h) / TILE)) - max(0, y // TILE)
        chunks_per_window += cols * rows
    assert decoded == 7 * 6  # every chunk of the level once
    assert chunks_per_window > 1.5 * decoded  # what decoding each window afresh would cost
    fresh, fresh_decoded = _fresh_windows(store, options, list(range(len(windows))))
    assert fresh_decoded == chunks_per_window
    assert all(torch.equal(a, b) for a, b in zip(windows, fresh, strict=True))


@pytest.mark.parametrize("io", ["host", "device"])
def test_windows_out_of_order_and_resampled_equal_uncached_reads(tmp_path: Path, io: str) -> None:
    """A distributed region task runs units in any order, and a 0.3 µm/px slide is read at
    level 1 resampled by 1.2: the cache may then miss, but never returns other pixels."""
    store = _noise_store(tmp_path, mpp=0.3)
    toy = spec(tile=128, overlap=16)
    options = EngineOptions(unit_chunks=1, skip_glass=False, io=io)
    pyramid = SlidePyramid(store)
    plan = make_plan(pyramid, toy, options)
    assert plan.level == 1 and plan.scale != 1.0
    order = list(range(len(plan.units())))
    for shuffled in (False, True):
        if shuffled:
            random.Random(6).shuffle(order)
        with Engine(ColourModel(toy), toy, "cpu", options) as engine:
            cached = _windows(engine, store, order)
            decoded = engine.chunks.decoded
        expected, fresh_decoded = _fresh_windows(store, options, order)
        assert decoded < fresh_decoded
        for got, want in zip(cached, expected, strict=True):
            assert torch.equal(got, want)

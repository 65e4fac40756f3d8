"""Fixtures of the inference tests: a slide store with known regions, written with JPEG chunks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from tests.inference.helpers import regions_image, write_store

WIDTH, HEIGHT = 1200, 900


@pytest.fixture
def regions() -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """(rgb, expected class mask) of the known-regions slide."""
    return regions_image(WIDTH, HEIGHT)


@pytest.fixture
def regions_store(
    tmp_path: Path, regions: tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]
) -> Path:
    """The known-regions slide as an IAIN pyramid, 0.5 µm/px, 256 px JPEG tiles."""
    return write_store(tmp_path / "regions.zarr", regions[0])

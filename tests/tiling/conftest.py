"""Fixtures of the tiling tests: small slides written with tifffile/numpy, real SVS paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

import tiling  # noqa: F401  (registers the iain.jpeg codec)


def block_pixels(width: int, height: int, block: int = 16, seed: int = 7) -> np.ndarray:
    """Flat colour blocks aligned to JPEG MCUs: JPEG keeps them within a few levels, so
    'exact' pixel and geometry checks are possible through a lossy codec."""
    rng = np.random.default_rng(seed)
    by, bx = -(-height // block), -(-width // block)
    colours = rng.integers(0, 256, size=(by, bx, 3), dtype=np.uint8)
    # keep neighbours close so chroma subsampling does not smear edges much
    colours = (colours // 4 + 96).astype(np.uint8)
    return np.repeat(np.repeat(colours, block, 0), block, 1)[:height, :width].copy()


@pytest.fixture()
def source_file(tmp_path: Path) -> Path:
    """A real file standing for the slide (its bytes are hashed into the pyramid metadata)."""
    path = tmp_path / "source.bin"
    path.write_bytes(b"synthetic slide " + tmp_path.name.encode())
    return path


@pytest.fixture()
def jpeg_tiff(tmp_path: Path) -> Path:
    """A tiled JPEG TIFF, 1000 x 700 (not a multiple of its 256 px tiles)."""
    path = tmp_path / "tiled.tif"
    tifffile.imwrite(
        path, block_pixels(1000, 700), tile=(256, 256), compression="jpeg", photometric="rgb"
    )
    return path


@pytest.fixture(scope="session")
def cmu_svs(slides_dir: Path) -> Path:
    return slides_dir / "CMU-1-Small-Region.svs"

"""Fixtures for the model registry tests: the shipped model and throwaway copies of it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from models.config import PACKAGE_DIR

SHIPPED = "crc-tumour"


@pytest.fixture(scope="session")
def shipped_name() -> str:
    """The model trained here and committed with its weights."""
    return SHIPPED


@pytest.fixture
def models_root(tmp_path: Path) -> Path:
    """A registry root holding a copy of the shipped model, safe to corrupt."""
    root = tmp_path / "registry"
    root.mkdir()
    shutil.copytree(PACKAGE_DIR / SHIPPED, root / SHIPPED)
    return root


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """One intra-op thread: on a loaded 2-core machine two OpenMP threads stall on each other
    (measured 3-19 s vs 1.2-2 s per training step); restored afterwards for other packages."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

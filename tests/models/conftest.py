"""Fixtures for the model registry tests: the shipped model and throwaway copies of it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

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

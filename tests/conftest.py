"""Fixtures shared by every test package: where the real sample data lives.

The real slides and datasets sit in ``../shared`` beside the repository (never copied into it);
``IAIN_SAMPLE_SLIDES`` and ``IAIN_DATASETS`` override the paths.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

# Debian's chromium for the browser tests (Playwright never downloads one here). The flags keep
# it off the network: on this machine's closed network its background connections are refused.
CHROMIUM = Path(os.environ.get("IAIN_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def sample_slides_dir() -> Path:
    return Path(os.environ.get("IAIN_SAMPLE_SLIDES", REPO_ROOT.parent / "shared" / "slides"))


def datasets_dir() -> Path:
    return Path(os.environ.get("IAIN_DATASETS", REPO_ROOT.parent / "shared" / "datasets"))


@pytest.fixture(scope="session")
def slides_dir() -> Path:
    path = sample_slides_dir()
    if not (path / "CMU-1-Small-Region.svs").exists():
        pytest.fail(f"sample slides not found at {path} (set IAIN_SAMPLE_SLIDES)")
    return path


@pytest.fixture(scope="session")
def bad_slides_dir(slides_dir: Path) -> Path:
    return slides_dir / "bad"


@pytest.fixture(scope="session")
def ebhi_dir() -> Path:
    path = datasets_dir() / "ebhi-seg-subset"
    if not (path / "split.csv").exists():
        pytest.fail(f"EBHI-Seg subset not found at {path} (set IAIN_DATASETS)")
    return path


@pytest.fixture(scope="session")
def shared_browser() -> Iterator[Any]:
    """ONE Playwright + Debian chromium for the whole session: a thread can hold one sync
    Playwright at a time, so per-package instances clashed when packages ran out of order."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} not found: run `make install` (installs Debian's chromium)")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``slow`` run only with IAIN_SLOW=1 (keeps ``make test`` near 10 minutes)."""
    if os.environ.get("IAIN_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set IAIN_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)

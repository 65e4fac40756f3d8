"""The RCP view's AI overlay is toggled per pane: the labelled slide's tumour layer shows in its
pane, and unticking it there hides it there only (the real app, uvicorn, Debian's chromium)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Page

from tests.viewer._stub_backend import LiveServer
from tests.viewer.conftest import make_settings, wait_ready
from tests.viewer.overlay_labels import regions_mask, write_labels
from tests.viewer.pyramids import synthetic_rgb, write_pyramid
from viewer.app import create_app

pytestmark = pytest.mark.browser

WIDTH, HEIGHT = 1600, 1100


@pytest.fixture(scope="module")
def two_slides(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    data = tmp_path_factory.mktemp("rcp-overlay-data")
    pixels = (synthetic_rgb(WIDTH, HEIGHT, seed=7) // 2 + 100).astype(np.uint8)
    geometry = write_pyramid(data / "labelled.zarr", pixels, tile=256)
    write_labels(data / "labelled.zarr", geometry, regions_mask(WIDTH, HEIGHT))
    plain = (synthetic_rgb(WIDTH, HEIGHT, seed=8) // 2 + 100).astype(np.uint8)
    write_pyramid(data / "plain.zarr", plain, tile=256, mpp=0.25)  # a finer scan
    server = LiveServer(
        create_app(make_settings(data, tmp_path_factory.mktemp("c"))), lifespan="on"
    )
    try:
        wait_ready(server.url)
        ids = {s["name"]: s["id"] for s in httpx.get(f"{server.url}/api/slides").json()}
        yield server.url, ids
    finally:
        server.stop()


def _pixels(page: Page, pane: int, artifacts: Path, name: str) -> np.ndarray:
    png = page.locator(f"#rcp-osd-{pane}").screenshot(path=str(artifacts / name))
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)


def _greenness(pixels: np.ndarray) -> float:
    """How much green dominates (the epithelium class is drawn in (0, 160, 0))."""
    return float((pixels[..., 1] - (pixels[..., 0] + pixels[..., 2]) / 2).mean())


def test_overlay_toggles_per_pane(
    page: Page, two_slides: tuple[str, dict[str, str]], artifacts: Path
) -> None:
    url, ids = two_slides
    labelled, plain = ids["labelled"], ids["plain"]
    page.goto(f"{url}/rcp?slides={labelled},{plain}")
    page.wait_for_function("document.body.dataset.state === 'open'", timeout=15_000)
    page.wait_for_function("iainRcp.panes[0].overlay !== null", timeout=15_000)
    page.evaluate("iainRcp.settled()")
    assert page.locator(".rcp-pane[data-index='0'] input.rcp-overlay").count() == 1
    assert page.locator(".rcp-pane[data-index='1'] input.rcp-overlay").count() == 0
    on = _pixels(page, 0, artifacts, "rcp-overlay-on.png")
    other = _pixels(page, 1, artifacts, "rcp-overlay-other.png")
    page.uncheck(".rcp-pane[data-index='0'] input.rcp-overlay")
    page.evaluate("iainRcp.settled()")
    off = _pixels(page, 0, artifacts, "rcp-overlay-off.png")
    assert page.evaluate("iainRcp.panes[0].overlay.getOpacity()") == 0
    assert _greenness(on) > _greenness(off) + 15  # the label layer is what made it green
    assert np.abs(_pixels(page, 1, artifacts, "rcp-overlay-other2.png") - other).mean() < 1
    page.check(".rcp-pane[data-index='0'] input.rcp-overlay")
    page.evaluate("iainRcp.settled()")
    again = _pixels(page, 0, artifacts, "rcp-overlay-again.png")
    assert np.abs(again - on).mean() < 1

"""The AI label overlay in the real viewer (``create_app`` + uvicorn + Debian's chromium):
tiles blend in with the opacity slider, outlines are drawn in the class colours, the
"AI output — pending validation" badge is visible. Screenshots go to ``test-artifacts/``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import numpy.typing as npt
import pytest
from playwright.sync_api import Page

from tests.viewer._stub_backend import LiveServer
from tests.viewer.conftest import make_settings
from tests.viewer.overlay_labels import regions_mask, write_labels
from tests.viewer.pyramids import synthetic_rgb, write_pyramid
from tests.viewer.test_browser_viewer import open_viewer, settle, stage_pixels
from viewer.app import create_app

pytestmark = pytest.mark.browser

WIDTH, HEIGHT = 1600, 1100


@pytest.fixture(scope="module")
def labelled_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    data = tmp_path_factory.mktemp("overlay-data")
    pixels = synthetic_rgb(WIDTH, HEIGHT, seed=7) // 2 + 100  # pale: red labels stand out
    geometry = write_pyramid(data / "labelled.zarr", pixels.astype(np.uint8), tile=256)
    write_labels(data / "labelled.zarr", geometry, regions_mask(WIDTH, HEIGHT))
    app = create_app(make_settings(data, tmp_path_factory.mktemp("overlay-cache")))
    server = LiveServer(app, lifespan="on")
    try:
        deadline_ok = False
        for _ in range(200):
            try:
                if httpx.get(f"{server.url}/healthz").status_code == 200:
                    deadline_ok = True
                    break
            except httpx.HTTPError:
                pass
            import time

            time.sleep(0.05)
        assert deadline_ok, "server did not start"
        (slide,) = httpx.get(f"{server.url}/api/slides").json()
        yield server.url, slide["id"]
    finally:
        server.stop()


def _red_share(pixels: npt.NDArray[np.uint8]) -> float:
    """Share of pixels in the tumour colour (220, 0, 0)."""
    diff = np.abs(pixels.astype(np.int16) - np.array([220, 0, 0])).max(axis=2)
    return float((diff < 40).mean())


def test_label_overlay_outlines_and_badge(
    page: Page, labelled_server: tuple[str, str], artifacts: Path
) -> None:
    url, slide_id = labelled_server
    tile_urls: list[str] = []
    page.on("request", lambda r: tile_urls.append(r.url) if "/labels/toy_files/" in r.url else None)
    open_viewer(page, f"{url}/view/{slide_id}")
    page.wait_for_function("iain.overlay !== null")
    page.wait_for_function("Number(document.body.dataset.outlines) > 0")
    settle(page)
    badge = page.locator("#ai-badge-image")
    assert badge.is_visible() and badge.inner_text() == "AI output — pending validation"
    assert page.locator("#ai-badge").inner_text() == "AI output — pending validation"
    assert page.locator("#overlay-select option").all_inner_texts() == ["toy"]
    assert not page.locator("#ai-review").is_visible()  # no accounts: nobody to review

    assert tile_urls and all("?v=" in u for u in tile_urls)  # versioned, so immutable is safe

    # outlines: one path per region, in the class colour, over the tumour square on screen
    paths = page.locator("#ai-outlines path")
    assert paths.count() >= 2
    tumour = page.locator("#ai-outlines path[data-cls='tumour']")
    assert tumour.first.get_attribute("stroke") == "rgb(220, 0, 0)"
    box = tumour.first.bounding_box()
    osd = page.locator("#ai-outlines").bounding_box()  # the SVG covers the viewer canvas
    assert box is not None and osd is not None
    corners = page.evaluate(
        "(() => { const it = iain.viewer.world.getItemAt(0);"
        " const a = it.imageToViewerElementCoordinates(new OpenSeadragon.Point(300, 200));"
        " const b = it.imageToViewerElementCoordinates(new OpenSeadragon.Point(620, 420));"
        " return [a.x, a.y, b.x, b.y]; })()"
    )
    # the stroke's miter joins widen the box by a few px: compare centres and sizes
    centre_x = box["x"] - osd["x"] + box["width"] / 2
    centre_y = box["y"] - osd["y"] + box["height"] / 2
    assert centre_x == pytest.approx((corners[0] + corners[2]) / 2, abs=2)
    assert centre_y == pytest.approx((corners[1] + corners[3]) / 2, abs=2)
    assert box["width"] == pytest.approx(corners[2] - corners[0], abs=10)

    page.locator("#overlay-opacity").fill("100")
    settle(page)
    full = stage_pixels(page, artifacts / "overlay-real-100.png")
    page.screenshot(path=str(artifacts / "overlay-real-page.png"))
    page.locator("#overlay-opacity").fill("0")
    settle(page)
    none = stage_pixels(page, artifacts / "overlay-real-0.png")
    # the tumour square fills (320 x 220) / (1600 x 1100) of the slide: ~4 % of the image
    assert _red_share(full) > 0.02
    assert _red_share(none) < 0.01  # only the outline strokes remain red
    assert np.abs(full.astype(np.int16) - none).max(axis=2).mean() > 5  # epithelium green too

    # the checkbox hides the tiles and the outlines together
    page.locator("#overlay-on").uncheck()
    assert not page.locator("#ai-outlines").is_visible()


@pytest.fixture(scope="module")
def accounts_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The same labelled slide behind accounts: a pathologist of its centre may review."""
    from share.config import ShareSettings
    from tests.share.conftest import LiveServer as ShareLiveServer

    data = tmp_path_factory.mktemp("overlay-accounts-data")
    pixels = synthetic_rgb(800, 600, seed=8)
    geometry = write_pyramid(data / "labelled.zarr", pixels, tile=256)
    write_labels(data / "labelled.zarr", geometry, regions_mask(800, 600))
    tmp = tmp_path_factory.mktemp("overlay-accounts")
    share = ShareSettings(
        data_dir=tmp,
        database_url=f"sqlite:///{tmp / 'iain.db'}",
        argon2_time_cost=1,
        argon2_memory_kib=1024,
    )
    app = create_app(make_settings(data, tmp / "cache"), share)
    with ShareLiveServer(app) as url:
        ((ref, _),) = app.state.accounts.slides()
        app.state.accounts.add_user("caen-patho", ref.centre, "pathologist", "caen-patho-pw")
        yield url, ref.slide_id


def test_pathologist_accepts_the_layer_from_the_viewer(
    page: Page, accounts_server: tuple[str, str], artifacts: Path
) -> None:
    url, slide_id = accounts_server
    login = page.request.post(
        f"{url}/api/login", data={"username": "caen-patho", "password": "caen-patho-pw"}
    )
    assert login.ok
    open_viewer(page, f"{url}/view/{slide_id}")
    page.wait_for_function("Number(document.body.dataset.outlines) > 0")
    assert page.locator("#ai-badge").inner_text() == "AI output — pending validation"
    page.locator("#ai-review button[data-decision='accept']").click()
    page.wait_for_function("document.getElementById('ai-badge').dataset.status === 'accepted'")
    assert page.locator("#ai-badge-image").inner_text() == "AI output — accepted by caen-patho"
    page.screenshot(path=str(artifacts / "overlay-accepted-page.png"))
    # the server holds the decision: a fresh load shows it too
    open_viewer(page, f"{url}/view/{slide_id}")
    page.wait_for_function("document.getElementById('ai-badge')?.dataset.status === 'accepted'")

"""The viewer in Debian's chromium (Playwright) against a live uvicorn on 127.0.0.1.

``viewer_server`` is the real ``create_app`` serving the real sample slide and a tifffile-made
ruler slide, both converted by ``tiling``; ``stub_server`` stands in only for the overlay
contract (``overlays: [{name, dzi_url}]`` in the slide JSON) that the real app does not fill yet.
Every test waits on OpenSeadragon itself (each world item's ``getFullyLoaded()`` after two frames,
``window.iain.settled()``) rather than on sleeps, and saves a screenshot into ``test-artifacts/``.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image
from playwright.sync_api import Page

from tests.viewer._stub_backend import LiveServer
from tests.viewer.conftest import (
    AREA_H_PX,
    AREA_W_PX,
    RULER_GAP_PX,
    RULER_MPP,
)

pytestmark = pytest.mark.browser

CMU_MPP = 0.499
CMU = "CMU-1-Small-Region.svs"
RULER = "ruler.tif"


def view_url(server: LiveServer, ids: dict[str, str], name: str) -> str:
    return f"{server.url}/view/{ids[name]}"


def open_viewer(page: Page, url: str) -> None:
    page.goto(url)
    page.wait_for_function("document.body.dataset.state === 'open'", timeout=15_000)
    settle(page)


def settle(page: Page) -> None:
    page.evaluate("window.iain.settled()")


def stage_pixels(page: Page, path: Path) -> npt.NDArray[np.uint8]:
    """Screenshot of the viewer element only (no panel), saved and returned as (y, x, 3)."""
    png = page.locator("#osd").screenshot(path=str(path))
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def view_state(page: Page) -> dict[str, Any]:
    """Where the view is going (the spring targets): no race with the animation."""
    state: dict[str, Any] = page.evaluate(
        "({c: iain.centreImage(false), zoom: iain.imageZoom(false),"
        " items: iain.viewer.world.getItemCount()})"
    )
    return state


def tissue_fraction(pixels: npt.NDArray[np.uint8]) -> float:
    """Share of pixels that are stained (clearly darker or more saturated than glass)."""
    rgb = pixels.astype(np.int16)
    saturation = rgb.max(axis=2) - rgb.min(axis=2)
    return float(((saturation > 25) | (rgb.mean(axis=2) < 180)).mean())


def test_viewer_shows_tissue_of_the_real_slide(
    page: Page, viewer_server: LiveServer, viewer_ids: dict[str, str], artifacts: Path
) -> None:
    open_viewer(page, view_url(viewer_server, viewer_ids, CMU))
    pixels = stage_pixels(page, artifacts / "viewer-cmu1-home.png")
    page.screenshot(path=str(artifacts / "viewer-cmu1-page.png"))
    # H&E: a good share of stained pixels, pink-purple on average, and not a flat image.
    assert tissue_fraction(pixels) > 0.12  # the slide is tall: glass-white margins each side
    assert pixels.std() > 20
    stained = pixels[pixels.astype(np.int16).min(axis=2) < 200].astype(float)
    assert stained[:, 0].mean() > stained[:, 1].mean() + 20  # red over green: eosin
    assert page.locator("#slide-name").inner_text() == CMU
    assert "aperio" in page.locator("#slide-meta").inner_text()


def test_scale_bar_and_magnification_follow_the_mpp(
    page: Page, viewer_server: LiveServer, viewer_ids: dict[str, str]
) -> None:
    open_viewer(page, view_url(viewer_server, viewer_ids, CMU))
    page.click("#btn-1to1")
    page.wait_for_function("Math.abs(iain.imageZoom() - 1) < 1e-3")
    # 1:1 on a 0.499 µm/px scan is 0.499 µm per screen pixel: about x20.
    assert page.locator("#mag").inner_text() == "×20"
    page.click("button[data-mag='40']")
    page.wait_for_function("Math.abs(document.getElementById('mag').dataset.value - 40) < 0.01")
    assert page.evaluate("iain.imageZoom()") == pytest.approx(40 * CMU_MPP / 10, rel=1e-3)
    bar = page.evaluate(
        "({um: +scalebar.dataset.um, px: +scalebar.dataset.px, "
        "width: scalebar.querySelector('.bar').getBoundingClientRect().width})"
    )
    # The drawn bar is as long on screen as its label says at 0.25 µm per screen pixel.
    assert bar["width"] == pytest.approx(bar["um"] / 0.25, rel=0.01)
    assert 50 < bar["width"] <= 180
    assert page.locator("#scalebar .label").inner_text() in {"20 µm", "50 µm", "10 µm"}


def test_pan_and_zoom_with_keys_and_buttons(
    page: Page, viewer_server: LiveServer, viewer_ids: dict[str, str], artifacts: Path
) -> None:
    open_viewer(page, view_url(viewer_server, viewer_ids, CMU))
    page.click("button[data-mag='10']")
    settle(page)
    page.wait_for_function("!iain.viewer.isAnimating()")
    before = view_state(page)
    page.locator("#btn-home").focus()  # focus outside the canvas: the page-wide keys
    page.keyboard.press("ArrowRight")
    right = view_state(page)
    assert right["c"]["x"] > before["c"]["x"] + 50
    assert right["c"]["y"] == pytest.approx(before["c"]["y"], abs=1)
    page.keyboard.press("s")
    down = view_state(page)
    assert down["c"]["y"] > right["c"]["y"] + 50
    page.keyboard.press("+")
    assert view_state(page)["zoom"] == pytest.approx(before["zoom"] * 1.5, rel=0.02)
    settle(page)
    pixels = stage_pixels(page, artifacts / "viewer-cmu1-zoomed.png")
    assert tissue_fraction(pixels) > 0.1
    # The mouse wheel zooms in too, and the tiles of the new view arrive.
    box = page.locator("#osd").bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    zoom = view_state(page)["zoom"]
    page.mouse.wheel(0, -300)
    page.wait_for_function(f"iain.imageZoom(false) > {zoom * 1.1}")
    settle(page)


def test_deep_link_restores_the_same_view_elsewhere(
    page: Page, viewer_server: LiveServer, viewer_ids: dict[str, str], browser: Any
) -> None:
    open_viewer(page, view_url(viewer_server, viewer_ids, CMU))
    page.evaluate(
        "iain.setMagnification(12.5, true);"
        "iain.viewer.viewport.panTo(iain.viewer.world.getItemAt(0)"
        ".imageToViewportCoordinates(new OpenSeadragon.Point(1500, 900)), true);"
        "iain.viewer.viewport.applyConstraints(true);"
    )
    page.wait_for_function("new URLSearchParams(location.search).has('x_um')")
    page.wait_for_function(
        "Math.abs(+new URLSearchParams(location.search).get('x_um') - 748.5) < 1"
    )
    link = page.url
    assert "x_um=748.5" in link and "y_um=449.1" in link and "mag=12.5" in link
    # Another screen size, another tab: the same tissue point in the centre, same magnification.
    other = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
    try:
        open_viewer(other, link)
        state = view_state(other)
        assert state["c"]["x"] == pytest.approx(1500, abs=0.5)
        assert state["c"]["y"] == pytest.approx(900, abs=0.5)
        assert state["zoom"] == pytest.approx(12.5 * CMU_MPP / 10, rel=1e-3)
        other.reload()
        other.wait_for_function("document.body.dataset.state === 'open'")
        assert view_state(other)["c"]["x"] == pytest.approx(1500, abs=0.5)
    finally:
        other.context.close()


def marker_centres(
    pixels: npt.NDArray[np.uint8], rgb: tuple[int, int, int]
) -> list[tuple[float, float]]:
    """(x, y) centroids of the discs of colour ``rgb``, left to right then top to bottom."""
    diff = np.abs(pixels.astype(np.int16) - np.array(rgb, np.int16)).max(axis=2)
    ys, xs = np.nonzero(diff < 60)
    assert len(xs) > 0, f"no {rgb} marker on screen"
    blobs: list[list[tuple[int, int]]] = []
    for x, y in zip(xs.tolist(), ys.tolist(), strict=True):
        for blob in blobs:
            bx, by = blob[0]
            if abs(bx - x) < 40 and abs(by - y) < 40:
                blob.append((x, y))
                break
        else:
            blobs.append([(x, y)])
    centres = [
        (float(np.mean([p[0] for p in b])), float(np.mean([p[1] for p in b]))) for b in blobs
    ]
    return sorted(centres, key=lambda c: (round(c[1] / 50), c[0]))


def click_at(page: Page, point: tuple[float, float]) -> None:
    box = page.locator("#osd").bounding_box()
    assert box is not None
    page.mouse.click(box["x"] + point[0], box["y"] + point[1])


def test_ruler_measures_a_known_distance_and_area(
    page: Page, viewer_server: LiveServer, viewer_ids: dict[str, str], artifacts: Path
) -> None:
    open_viewer(page, view_url(viewer_server, viewer_ids, RULER))
    # The navigator's red view box is not a marker.
    page.evaluate("iain.viewer.navigator.element.style.visibility = 'hidden'")
    pixels = stage_pixels(page, artifacts / "ruler-home.png")
    red = marker_centres(pixels, (255, 0, 0))
    assert len(red) == 2
    page.click("#btn-ruler")
    click_at(page, red[0])
    click_at(page, red[1])
    page.wait_for_function("iain.measurement !== null")
    length_um = float(page.locator("#measure").get_attribute("data-length-um") or "nan")
    # 2000 px at 0.25 µm/px = 500 µm, found by clicking the markers seen on screen.
    assert length_um == pytest.approx(RULER_GAP_PX * RULER_MPP, rel=0.01)
    assert page.locator("#measure").inner_text().endswith("µm")

    blue = marker_centres(pixels, (0, 0, 255))
    assert len(blue) == 4
    top_left, top_right, bottom_left, bottom_right = blue
    page.click("#btn-area")
    for corner in (top_left, top_right, bottom_right, bottom_left):
        click_at(page, corner)
    page.keyboard.press("Enter")
    page.wait_for_function("iain.measurement && iain.measurement.kind === 'area'")
    area = float(page.locator("#measure").get_attribute("data-area-mm2") or "nan")
    expected = AREA_W_PX * RULER_MPP * AREA_H_PX * RULER_MPP / 1e6  # 0.1 mm²
    assert area == pytest.approx(expected, rel=0.01)
    assert "mm²" in page.locator("#measure").inner_text()
    page.screenshot(path=str(artifacts / "ruler-measured.png"))
    assert page.locator("#ruler-layer polygon").count() == 1
    assert page.locator("#ruler-layer polyline").count() == 1
    # The drawn shapes are pinned to the slide: zooming in moves them with it.
    first = page.locator("#ruler-layer circle").first
    x_before = float(first.get_attribute("cx") or "nan")
    page.click("button[data-mag='5']")
    settle(page)
    x_after = float(page.locator("#ruler-layer circle").first.get_attribute("cx") or "nan")
    assert abs(x_after - x_before) > 20


def test_overlay_layer_with_opacity(page: Page, stub_server: LiveServer, artifacts: Path) -> None:
    open_viewer(page, f"{stub_server.url}/view/cmu1-labelled")
    page.wait_for_function("iain.overlay !== null")
    settle(page)
    assert page.locator("#overlay-panel").is_visible()
    assert page.locator("#overlay-select option").all_inner_texts() == ["tissue"]
    page.locator("#overlay-opacity").fill("100")
    settle(page)
    full = stage_pixels(page, artifacts / "overlay-100.png").astype(np.int16)
    page.locator("#overlay-opacity").fill("0")
    settle(page)
    none = stage_pixels(page, artifacts / "overlay-0.png").astype(np.int16)

    # The label colour (220, 30, 30) replaces the stain where the overlay is opaque.
    def label_share(pixels: npt.NDArray[np.int16]) -> float:
        return float((np.abs(pixels - np.array([220, 30, 30])).max(axis=2) < 30).mean())

    assert label_share(full) > 0.1  # about the tissue share of the home view
    assert label_share(none) < 0.02
    assert tissue_fraction(none.astype(np.uint8)) > 0.1  # the stain is back


def test_slide_without_overlay_hides_the_slot(
    page: Page, viewer_server: LiveServer, viewer_ids: dict[str, str]
) -> None:
    open_viewer(page, view_url(viewer_server, viewer_ids, CMU))
    assert not page.locator("#overlay-panel").is_visible()
    assert view_state(page)["items"] == 1


def test_unknown_slide_shows_a_message(page: Page, viewer_server: LiveServer) -> None:
    response = page.goto(f"{viewer_server.url}/view/no-such-slide")
    assert response is not None and response.status == 404
    assert page.locator(".error").inner_text() == "No such slide."


def test_slide_list_shows_cards_with_thumbnails(
    page: Page, viewer_server: LiveServer, viewer_ids: dict[str, str], artifacts: Path
) -> None:
    page.goto(f"{viewer_server.url}/")
    page.wait_for_selector(".card")
    page.wait_for_function(
        "[...document.querySelectorAll('.card img')].every(i => i.complete && i.naturalWidth > 0)"
    )
    page.screenshot(path=str(artifacts / "slide-list.png"))
    cards = page.locator(".card")
    assert cards.count() == 2  # one card per converted slide
    first = cards.nth(0).inner_text()
    assert "CMU-1-Small-Region" in first
    assert "aperio" in first and "0.499 µm/px" in first and "2,220 × 2,967 px" in first
    cards.nth(0).click()
    page.wait_for_url(f"**/view/{viewer_ids[CMU]}")
    page.wait_for_function("document.body.dataset.state === 'open'")


PAN_RIGHT_JS = """async () => {
  const vp = iain.viewer.viewport;
  const t0 = performance.now();
  vp.panBy(vp.deltaPointsFromPixels(new OpenSeadragon.Point(vp.getContainerSize().x, 0)), true);
  await iain.settled();
  return performance.getEntriesByType("resource")
    .filter((e) => e.startTime >= t0 && e.name.includes("_files/")).length;
}"""


def test_next_screen_is_prefetched_in_the_pan_direction(
    page: Page, viewer_server: LiveServer, viewer_ids: dict[str, str]
) -> None:
    page.add_init_script("performance.setResourceTimingBufferSize(100000)")
    open_viewer(page, view_url(viewer_server, viewer_ids, RULER) + "?x_um=130&y_um=375&mag=40")
    assert page.evaluate("iain.imageZoom()") == pytest.approx(1, rel=1e-3)
    page.wait_for_function("iain.prefetch.anchor !== null")  # the view at rest is noted
    first_pan_requests = page.evaluate(PAN_RIGHT_JS)
    assert first_pan_requests > 0  # a screen never seen before comes over the network
    # At rest, the screen further right is fetched ahead ...
    page.wait_for_function("iain.prefetch.requested > 0 && iain.prefetch.images.size === 0")
    # ... so the next pan that way finds its tiles in the browser cache. (A few coarser tiles
    # that OpenSeadragon wants where the view passes the slide's edge are not prefetched.)
    assert page.evaluate(PAN_RIGHT_JS) <= first_pan_requests // 4


PAN_LEVELS_JS = """async () => {
  const vp = iain.viewer.viewport;
  const t0 = performance.now();
  vp.panBy(vp.deltaPointsFromPixels(new OpenSeadragon.Point(vp.getContainerSize().x, 0)), true);
  await iain.settled();
  return performance.getEntriesByType("resource")
    .filter((e) => e.startTime >= t0 && e.name.includes("_files/"))
    .map((e) => Number(e.name.split("_files/")[1].split("/")[0]));
}"""


@pytest.mark.parametrize("placeholders", [False, True])
def test_a_pan_fetches_only_the_level_the_screen_needs(
    page: Page,
    viewer_server: LiveServer,
    viewer_ids: dict[str, str],
    artifacts: Path,
    placeholders: bool,
) -> None:
    """At a steady zoom the coarse placeholder levels of a new area are not fetched (they were
    ~37 % of a pan's bytes); ``?placeholders=1`` keeps OpenSeadragon's own behaviour."""
    page.add_init_script("performance.setResourceTimingBufferSize(100000)")
    query = "?x_um=130&y_um=375&mag=40&prefetch=0" + ("&placeholders=1" if placeholders else "")
    open_viewer(page, view_url(viewer_server, viewer_ids, RULER) + query)
    top = page.evaluate("iain.viewer.world.getItemAt(0).source.maxLevel")
    levels = page.evaluate(PAN_LEVELS_JS)
    assert top in levels  # the new screen came over the network at full resolution
    coarser = [level for level in levels if level < top]
    if placeholders:
        assert coarser  # the control: OpenSeadragon alone asks for coarser levels too
    else:
        assert coarser == []
    pixels = stage_pixels(page, artifacts / f"pan-placeholders-{int(placeholders)}.png")
    # drawn: the ruler slide's grey glass (236), not the empty stage's white
    assert abs(float(np.median(pixels)) - 236) <= 4

"""The tumour-board (RCP) view in Debian's chromium: two real slides of different mpp side by
side; panning one with the mouse moves the other to the same place in µm."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page

from tests.viewer._stub_backend import LiveServer

pytestmark = pytest.mark.browser


def _centres(page: Page) -> list[dict[str, Any]]:
    state: list[dict[str, Any]] = page.evaluate(
        "iainRcp.panes.map((p, i) => ({c: iainRcp.centreUm(i, false),"
        " upp: iainRcp.umPerPx(i, false), mpp: p.mpp.x}))"
    )
    return state


def test_rcp_view_follows_a_pan_in_micrometres(
    page: Page, viewer_server: LiveServer, viewer_ids: dict[str, str], artifacts: Path
) -> None:
    cmu, ruler = viewer_ids["CMU-1-Small-Region.svs"], viewer_ids["ruler.tif"]
    page.goto(f"{viewer_server.url}/rcp?slides={cmu},{ruler}")
    page.wait_for_function("document.body.dataset.state === 'open'", timeout=15_000)
    page.evaluate("iainRcp.settled()")
    before = _centres(page)
    assert [round(b["mpp"], 3) for b in before] == [0.499, 0.25]  # different scanners
    # Aligned from the start: same centre and the same µm per screen pixel.
    assert before[1]["c"]["x"] == pytest.approx(before[0]["c"]["x"], abs=0.5)
    assert before[1]["upp"] == pytest.approx(before[0]["upp"], rel=1e-3)

    box = page.locator("#rcp-osd-0").bounding_box()
    assert box is not None
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x - 150, y - 100, steps=8)
    page.mouse.up()
    page.evaluate("iainRcp.settled()")
    after = _centres(page)
    page.screenshot(path=str(artifacts / "rcp-two-slides.png"))
    moved_x = after[0]["c"]["x"] - before[0]["c"]["x"]
    moved_y = after[0]["c"]["y"] - before[0]["c"]["y"]
    # Dragging left/up moves the view right/down by ~150/100 screen px worth of tissue.
    assert moved_x == pytest.approx(150 * before[0]["upp"], rel=0.35)
    assert moved_y == pytest.approx(100 * before[0]["upp"], rel=0.35)
    # The other pane followed, in µm (its slide has twice the pixels per µm).
    assert after[1]["c"]["x"] == pytest.approx(after[0]["c"]["x"], abs=0.5)
    assert after[1]["c"]["y"] == pytest.approx(after[0]["c"]["y"], abs=0.5)
    assert after[1]["upp"] == pytest.approx(after[0]["upp"], rel=1e-3)

    # Zoom on the second pane: now the first follows it.
    page.evaluate("iainRcp.state.leader = 1; iainRcp.panes[1].viewer.viewport.zoomBy(2)")
    page.evaluate("iainRcp.settled()")
    zoomed = _centres(page)
    assert zoomed[0]["upp"] == pytest.approx(after[0]["upp"] / 2, rel=0.02)
    assert zoomed[0]["c"]["x"] == pytest.approx(zoomed[1]["c"]["x"], abs=0.5)

    # Unsynchronised: a pan of one pane leaves the other where it is.
    page.uncheck("#rcp-sync")
    page.evaluate("iainRcp.setCentreUm(0, 100, 100)")
    page.evaluate("iainRcp.settled()")
    free = _centres(page)
    assert free[0]["c"]["x"] == pytest.approx(100, abs=0.5)
    assert free[1]["c"]["x"] == pytest.approx(zoomed[1]["c"]["x"], abs=0.5)


def test_rcp_page_refuses_bad_requests(
    viewer_server: LiveServer, viewer_ids: dict[str, str]
) -> None:
    cmu = viewer_ids["CMU-1-Small-Region.svs"]
    base = viewer_server.url
    assert httpx.get(f"{base}/rcp?slides={cmu}").status_code == 422  # one slide is no board
    assert httpx.get(f"{base}/rcp?slides={cmu},{cmu},{cmu},{cmu},{cmu}").status_code == 422
    assert httpx.get(f"{base}/rcp?slides={cmu},<script>").status_code == 422
    assert httpx.get(f"{base}/rcp?slides={cmu},{'f' * 16}").status_code == 404
    assert httpx.get(f"{base}/rcp").status_code == 422
    assert httpx.get(f"{base}/rcp?collection=0").status_code == 422

"""The annotation layer in the real viewer: ``create_app`` with accounts (SQLite) under uvicorn,
the real sample slide (CMU-1-Small-Region, centre caen) and the ruler slide (centre lille),
the demo accounts, Debian's chromium through Playwright.

Shapes are drawn with the mouse and checked twice: through the API (what was stored, in
level-0 pixels) and through the pixels of the annotation canvas (what is shown). Screenshots
and the frame-time figures go to ``test-artifacts/``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page

from share import annotations as store
from share.accounts import Accounts
from share.config import ShareSettings
from share.demo import create_demo_accounts
from tests.share.conftest import LiveServer, create_pg_database, pg_server  # noqa: F401
from tests.viewer.conftest import DEMO_PASSWORDS, api_log_in, make_settings
from viewer.app import create_app

pytestmark = pytest.mark.browser

PASSWORDS = DEMO_PASSWORDS
TUMOUR = (0xD6, 0x27, 0x28)  # the default "Tumour" class colour of annotations.js


@dataclass(frozen=True)
class Site:
    url: str
    cmu: str  # CMU-1-Small-Region, centre caen
    ruler: str  # the ruler slide, centre lille
    accounts: Accounts


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def site(
    request: pytest.FixtureRequest, viewer_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    """The real app with accounts, on SQLite and on PostgreSQL (the issue's "on both")."""
    tmp = tmp_path_factory.mktemp("annotations-site")
    database_url = (
        f"sqlite:///{tmp / 'iain.db'}"
        if request.param == "sqlite"
        else create_pg_database(request.getfixturevalue("pg_server"))
    )
    share = ShareSettings(
        data_dir=tmp,
        database_url=database_url,
        argon2_time_cost=1,
        argon2_memory_kib=1024,
        view_flush_s=3600,  # views reach the audit trail when it is read (the API flushes)
    )
    app = create_app(make_settings(viewer_data, tmp / "cache"), share)
    with LiveServer(app) as url:
        accounts: Accounts = app.state.accounts
        ids = {name: ref.slide_id for ref, name in accounts.slides()}
        cmu, ruler = ids["CMU-1-Small-Region.svs"], ids["ruler.tif"]
        accounts.assign_slide(cmu, "caen")
        accounts.assign_slide(ruler, "lille")
        create_demo_accounts(accounts)
        yield Site(url, cmu, ruler, accounts)


@pytest.fixture
def clean(site: Site) -> Site:
    """No annotation on the sample slide when a test starts."""
    store.purge_slide(site.accounts.db, site.cmu)
    return site


def log_in(page: Page, site: Site, username: str) -> None:
    api_log_in(page, site.url, username)


def open_annotated(page: Page, site: Site, slide_id: str) -> None:
    page.goto(f"{site.url}/view/{slide_id}")
    page.wait_for_function("document.body.dataset.state === 'open'", timeout=15_000)
    page.wait_for_function("window.iain.annotations && iain.annotations.user !== null")
    page.evaluate("iain.settled()")
    annotations_idle(page)


def annotations_idle(page: Page) -> None:
    page.evaluate("iain.annotations.idle()")


def to_page(page: Page, x: float, y: float) -> tuple[float, float]:
    """Level-0 image pixel -> page coordinates (for the mouse)."""
    box = page.locator("#osd").bounding_box()
    assert box is not None
    p = page.evaluate(
        "([x, y]) => { const q = iain.viewer.world.getItemAt(0)"
        ".imageToViewerElementCoordinates(new OpenSeadragon.Point(x, y)); return [q.x, q.y]; }",
        [x, y],
    )
    return box["x"] + p[0], box["y"] + p[1]


# Canvas pixel of a page point: the layer canvas is larger than the viewer and moved by a CSS
# transform, so go through its bounding rectangle.
CANVAS_PX_JS = """
  const c = document.getElementById('annotation-layer');
  const box = c.getBoundingClientRect();
  const k = c.width / box.width;
  const view = iain.viewer.canvas.getBoundingClientRect();
"""


def layer_pixel(page: Page, x: float, y: float, radius: int = 2) -> list[int]:
    """The most opaque RGBA pixel of the annotation canvas within ``radius`` of image (x, y)."""
    rgba: list[int] = page.evaluate(
        "([x, y, r]) => {"
        + CANVAS_PX_JS
        + """
          const q = iain.viewer.world.getItemAt(0)
            .imageToViewerElementCoordinates(new OpenSeadragon.Point(x, y));
          const px = Math.round((view.left + q.x - box.left) * k);
          const py = Math.round((view.top + q.y - box.top) * k);
          const d = c.getContext('2d').getImageData(px - r, py - r, 2 * r + 1, 2 * r + 1).data;
          let best = [0, 0, 0, 0];
          for (let i = 0; i < d.length; i += 4) {
            if (d[i + 3] > best[3]) best = [...d.slice(i, i + 4)];
          }
          return best;
        }""",
        [x, y, radius],
    )
    return rgba


def near(rgba: list[int], rgb: tuple[int, int, int], tol: int = 40) -> bool:
    return rgba[3] > 200 and all(abs(a - b) <= tol for a, b in zip(rgba[:3], rgb, strict=True))


def drag(page: Page, a: tuple[float, float], b: tuple[float, float]) -> None:
    page.mouse.move(*to_page(page, *a))
    page.mouse.down()
    page.mouse.move(*to_page(page, *b), steps=12)
    page.mouse.up()


def stored(page: Page, site: Site, slide_id: str) -> list[dict[str, Any]]:
    r = page.request.get(
        f"{site.url}/api/slides/{slide_id}/annotations?x=0&y=0&width=100000&height=100000"
    )
    assert r.ok, r.text()
    features: list[dict[str, Any]] = r.json()["features"]
    return features


def wait_status(page: Page, text: str) -> None:
    page.wait_for_function(
        "t => document.getElementById('annotation-status').textContent.includes(t)", arg=text
    )


RECT = ((600.0, 700.0), (1300.0, 1200.0))  # image pixels, inside the tissue of CMU-1
POLY = [(700.0, 1700.0), (1500.0, 1650.0), (1600.0, 2300.0), (800.0, 2400.0)]


def draw_rectangle_and_polygon(page: Page) -> None:
    page.select_option("#annotation-class", "Tumour")
    page.fill("#annotation-comment", "invasive front")
    page.click("button[data-tool=rectangle]")
    drag(page, *RECT)
    wait_status(page, "Saved rectangle")
    page.click("button[data-tool=polygon]")
    for x, y in POLY:
        page.mouse.click(*to_page(page, x, y))
        page.wait_for_timeout(350)  # apart in time: single clicks, not a double-click
    page.mouse.click(*to_page(page, *POLY[0]))  # back on the first vertex closes it
    wait_status(page, "Saved polygon")
    page.click("button[data-tool=polygon]")  # tool off


def test_pathologist_draws_shapes_that_survive_a_reload(
    page: Page, clean: Site, artifacts: Path
) -> None:
    site = clean
    log_in(page, site, "caen-patho")
    open_annotated(page, site, site.cmu)
    draw_rectangle_and_polygon(page)

    features = {f["iain"]["kind"]: f for f in stored(page, site, site.cmu)}
    assert sorted(features) == ["polygon", "rectangle"]
    rect = features["rectangle"]
    (ring,) = rect["geometry"]["coordinates"]
    xs, ys = sorted({p[0] for p in ring}), sorted({p[1] for p in ring})
    # drawn with the mouse at about 0.35 screen px per image px: a few image px of slack
    assert xs == pytest.approx([RECT[0][0], RECT[1][0]], abs=4)
    assert ys == pytest.approx([RECT[0][1], RECT[1][1]], abs=4)
    assert rect["properties"]["classification"] == {"name": "Tumour", "color": list(TUMOUR)}
    assert rect["iain"]["comment"] == "invasive front" and rect["iain"]["owner"] == "caen-patho"
    (poly_ring,) = features["polygon"]["geometry"]["coordinates"]
    assert len(poly_ring) == len(POLY) + 1 and poly_ring[0] == poly_ring[-1]
    for got, want in zip(poly_ring, POLY, strict=False):
        assert got == pytest.approx(list(want), abs=4)

    page.reload()
    page.wait_for_function("document.body.dataset.state === 'open'")
    page.wait_for_function("window.iain.annotations && iain.annotations.user !== null")
    page.evaluate("iain.settled()")
    annotations_idle(page)
    assert page.evaluate("iain.annotations.drawn") == 2
    page.locator("#osd").screenshot(path=str(artifacts / "annotations-reloaded.png"))
    # edges of both shapes are drawn in the class colour; inside, a light tint; away, nothing
    (x0, y0), (x1, y1) = RECT
    for x, y in (((x0 + x1) / 2, y0), (x1, (y0 + y1) / 2), ((x0 + x1) / 2, y1)):
        assert near(layer_pixel(page, x, y), TUMOUR), (x, y)
    (ax, ay), (bx, by) = POLY[0], POLY[1]
    assert near(layer_pixel(page, (ax + bx) / 2, (ay + by) / 2), TUMOUR)
    inside = layer_pixel(page, (x0 + x1) / 2, (y0 + y1) / 2, radius=0)
    assert 20 < inside[3] < 80  # the 15 % fill
    assert layer_pixel(page, 1900, 300)[3] == 0

    # zoomed in on the rectangle's corner: other cells are asked for, the edge is still drawn
    # where the slide has it (re-rasterised at the new zoom, not a stretched bitmap)
    page.evaluate(
        "iain.setMagnification(10, true);"
        "iain.viewer.viewport.panTo(iain.viewer.world.getItemAt(0)"
        ".imageToViewportCoordinates(new OpenSeadragon.Point(1300, 1200)), true);"
    )
    page.evaluate("iain.settled()")
    annotations_idle(page)
    assert page.evaluate("iain.annotations.cellSize") < 2048
    for x, y in ((1250, y1), (x1, 1150)):
        assert near(layer_pixel(page, x, y, radius=1), TUMOUR), (x, y)
    assert layer_pixel(page, 1350, 1250)[3] == 0  # outside the corner
    # the rectangle lies across several cells and comes with each: tinted once all the same
    assert 20 < layer_pixel(page, 1250, 1150, radius=0)[3] < 80
    page.locator("#osd").screenshot(path=str(artifacts / "annotations-zoomed.png"))


def browser_login(page: Page, site: Site, username: str) -> None:
    """Through the login page, as a person does: the list page redirects there first."""
    page.goto(f"{site.url}/")
    page.wait_for_url(f"{site.url}/login?next=/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORDS[username])
    page.click("button[type=submit]")
    page.wait_for_url(f"{site.url}/")


def test_two_centres_see_only_their_own_slides(browser: Browser, site: Site) -> None:
    seen = {}
    for username, own, other in (
        ("caen-patho", site.cmu, site.ruler),
        ("lille-patho", site.ruler, site.cmu),
    ):
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        try:
            browser_login(page, site, username)
            page.wait_for_function("document.querySelectorAll('#slides .card').length > 0")
            cards = page.eval_on_selector_all(
                "#slides .card", "cs => cs.map(c => c.dataset.slideId)"
            )
            seen[username] = cards
            assert cards == [own]
            response = page.goto(f"{site.url}/view/{other}")
            assert response is not None and response.status == 404
            assert page.locator("main .error").inner_text() == "No such slide."
            response = page.goto(f"{site.url}/view/{own}")
            assert response is not None and response.status == 200
            page.wait_for_function("document.body.dataset.state === 'open'")
        finally:
            context.close()
    assert seen == {"caen-patho": [site.cmu], "lille-patho": [site.ruler]}


def export_in_browser(page: Page, path: Path) -> dict[str, Any]:
    with page.expect_download() as info:
        page.click("#annotation-export")
    info.value.save_as(path)
    doc: dict[str, Any] = json.loads(path.read_text("utf-8"))
    return doc


def select_at(page: Page, x: float, y: float) -> None:
    page.mouse.click(*to_page(page, x, y))
    page.wait_for_function("document.getElementById('annotation-selected').hidden === false")


def delete_selected(page: Page) -> None:
    annotation_id = page.get_attribute("#annotation-selected", "data-id")
    page.click("#annotation-delete")
    wait_status(page, f"Deleted #{annotation_id}.")


def test_export_delete_import_round_trip(page: Page, clean: Site, tmp_path: Path) -> None:
    site = clean
    log_in(page, site, "caen-patho")
    open_annotated(page, site, site.cmu)
    draw_rectangle_and_polygon(page)
    first = export_in_browser(page, tmp_path / "first.geojson")
    assert first["type"] == "FeatureCollection" and len(first["features"]) == 2
    kinds = [f["properties"].get("iain", {}).get("kind") for f in first["features"]]
    assert kinds == ["rectangle", None]  # a polygon is what QuPath infers from the type

    # delete both in the viewer: select, then the Delete button
    page.click("button[data-tool=select]")
    (x0, y0), (x1, y1) = RECT
    select_at(page, (x0 + x1) / 2, (y0 + y1) / 2)
    assert "rectangle by caen-patho" in page.locator("#annotation-owner").inner_text()
    delete_selected(page)
    select_at(page, 1100, 2000)
    assert "polygon by caen-patho" in page.locator("#annotation-owner").inner_text()
    delete_selected(page)
    assert stored(page, site, site.cmu) == []
    annotations_idle(page)
    assert page.evaluate("iain.annotations.drawn") == 0

    page.set_input_files("#annotation-import-file", str(tmp_path / "first.geojson"))
    wait_status(page, "Imported 2 annotations")
    annotations_idle(page)
    assert page.evaluate("iain.annotations.drawn") == 2
    again = export_in_browser(page, tmp_path / "again.geojson")
    assert again == first
    assert near(layer_pixel(page, x1, (y0 + y1) / 2), TUMOUR)  # drawn again after the import


def test_stale_edit_gets_a_clear_conflict_message(page: Page, clean: Site) -> None:
    site = clean
    log_in(page, site, "caen-patho")
    open_annotated(page, site, site.cmu)
    page.click("button[data-tool=rectangle]")
    drag(page, *RECT)
    wait_status(page, "Saved rectangle")
    (feature,) = stored(page, site, site.cmu)
    page.click("button[data-tool=select]")
    (x0, y0), (x1, y1) = RECT
    select_at(page, (x0 + x1) / 2, (y0 + y1) / 2)
    # meanwhile the same annotation is edited from another tab (version 1 -> 2)
    csrf = next(c["value"] for c in page.context.cookies() if c["name"] == "iain_csrf")
    other = page.request.put(
        f"{site.url}/api/slides/{site.cmu}/annotations/{feature['iain']['id']}",
        data={
            "geometry": feature["geometry"],
            "kind": "rectangle",
            "comment": "other tab",
            "version": 1,
        },
        headers={"X-CSRF-Token": csrf},
    )
    assert other.ok, other.text()
    page.fill("#annotation-comment", "this tab")
    page.click("#annotation-save")
    wait_status(page, "changed by someone else")
    assert page.locator("#annotation-status").get_attribute("data-kind") == "conflict"
    annotations_idle(page)
    (after,) = stored(page, site, site.cmu)
    assert after["iain"]["comment"] == "other tab" and after["iain"]["version"] == 2
    # reloaded: selecting again gets version 2, and the save goes through
    select_at(page, (x0 + x1) / 2, (y0 + y1) / 2)
    assert "version 2" in page.locator("#annotation-owner").inner_text()
    page.fill("#annotation-comment", "this tab")
    page.click("#annotation-save")
    wait_status(page, "version 3")
    assert stored(page, site, site.cmu)[0]["iain"]["comment"] == "this tab"


def test_centre_admin_sees_the_pathologists_views(browser: Browser, site: Site) -> None:
    patho = browser.new_context(viewport={"width": 1280, "height": 800})
    admin = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = patho.new_page()
        log_in(page, site, "caen-patho")
        open_annotated(page, site, site.cmu)
        page = admin.new_page()
        browser_login(page, site, "caen-admin")
        page.goto(f"{site.url}/audit?slide_id={site.cmu}")
        page.wait_for_function("document.body.dataset.state === 'loaded'")
        views = page.locator("#audit tr[data-action='slide.view'][data-actor='caen-patho']")
        assert views.count() >= 1
        cells = views.first.locator("td").all_inner_texts()
        assert cells[5] == site.cmu and "tiles" in cells[6]
        # the pathologist's own page shows no audit trail (the API says 403)
        other = patho.new_page()
        other.goto(f"{site.url}/audit")
        other.wait_for_function("document.body.dataset.state === 'error'")
        assert "admin" in other.locator("#status").inner_text()
    finally:
        patho.close()
        admin.close()


def nuclei(n: int, width: int, height: int) -> dict[str, Any]:
    """``n`` small hexagons on a regular grid over the slide, like AI-detected nuclei."""
    cols = math.ceil(math.sqrt(n * width / height))
    rows = math.ceil(n / cols)
    sx, sy = width / cols, height / rows
    radius = 0.35 * min(sx, sy)
    corners = [(math.cos(k * math.pi / 3), math.sin(k * math.pi / 3)) for k in range(6)]
    features = []
    for i in range(n):
        cx, cy = (i % cols + 0.5) * sx, (i // cols + 0.5) * sy
        ring = [[round(cx + radius * c, 1), round(cy + radius * s, 1)] for c, s in corners]
        ring.append(ring[0])
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": {
                    "objectType": "detection",
                    "classification": {"name": "Nucleus", "color": [0, 90, 255]},
                },
            }
        )
    return {"type": "FeatureCollection", "features": features}


FRAME_TIMES_JS = """() => {
  const s = window.__frames = { deltas: [], running: true, raster: [],
    seen: iain.annotations.rasterised,
    rasterised: iain.annotations.rasterised };
  let last = null;
  const tick = (t) => {
    if (last !== null) s.deltas.push(t - last);
    if (iain.annotations.rasterised !== s.seen) {
      s.seen = iain.annotations.rasterised; s.raster.push(iain.annotations.rasterMs);
    }
    last = t;
    if (s.running) requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
}"""


def pan_for(page: Page, seconds: float, amplitude_px: float) -> int:
    """Drag the slide back and forth with the mouse (sine, one period a second)."""
    box = page.locator("#osd").bounding_box()
    assert box is not None
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx, cy)
    page.mouse.down()
    moves = 0
    start = time.monotonic()
    while (elapsed := time.monotonic() - start) < seconds:
        phase = 2 * math.pi * elapsed
        page.mouse.move(
            cx + amplitude_px * math.sin(phase), cy + 0.4 * amplitude_px * (1 - math.cos(phase))
        )
        moves += 1
    page.mouse.up()
    return moves


def measure_pan(page: Page, n: int, artifacts: Path, layer: str) -> dict[str, Any]:
    asked: list[str] = []

    def count(request: Any) -> None:
        if "/annotations" in request.url:
            asked.append(request.url.split("/annotations", 1)[1].split("?")[0] or "viewport")

    page.on("request", count)
    page.evaluate(FRAME_TIMES_JS)
    moves = pan_for(page, 2.0, 500)
    page.evaluate("window.__frames.running = false")
    page.remove_listener("request", count)
    frames = page.evaluate("window.__frames")
    deltas = sorted(frames["deltas"])
    assert len(deltas) >= 5, deltas
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    result = {
        "shapes_in_db": n,
        "layer": layer,
        "shapes_drawn": page.evaluate("iain.annotations.drawn"),
        "frames": len(deltas),
        "mouse_moves": moves,
        "frame_ms_p50": round(deltas[len(deltas) // 2], 1),
        "frame_ms_p95": round(deltas[min(len(deltas) - 1, int(0.95 * len(deltas)))], 1),
        "frame_ms_max": round(deltas[-1], 1),
        "rasterisations": page.evaluate("iain.annotations.rasterised") - frames["rasterised"],
        "raster_ms": [round(x, 1) for x in frames["raster"]],
        "requests": {k: asked.count(k) for k in sorted(set(asked))},
        "loadavg": load,
    }
    (artifacts / f"annotations-frame-time-{n}-{layer}.json").write_text(
        json.dumps(result, indent=1)
    )
    print(f"annotation pan, {n} shapes, layer {layer}: {result}")
    return result


def opaque_pixels(page: Page) -> int:
    """Painted pixels of the annotation canvas inside the viewer (not its margins)."""
    count: int = page.evaluate(
        "() => {"
        + CANVAS_PX_JS
        + """
          const x0 = Math.round((view.left - box.left) * k);
          const y0 = Math.round((view.top - box.top) * k);
          const d = c.getContext('2d').getImageData(
            x0, y0, Math.round(view.width * k), Math.round(view.height * k)).data;
          let n = 0;
          for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
          return n;
        }"""
    )
    return count


@pytest.mark.parametrize(
    "n", [10_000, pytest.param(100_000, marks=pytest.mark.slow)], ids=["1e4", "1e5"]
)
def test_pan_stays_smooth_with_many_shapes_in_view(
    page: Page, clean: Site, artifacts: Path, n: int
) -> None:
    site = clean
    width, height = 2220, 2967  # CMU-1-Small-Region, level 0
    accounts = site.accounts
    slide = accounts.slide(site.cmu)
    assert slide is not None
    imported = store.import_geojson(
        accounts.db,
        accounts.principal("caen-patho"),
        slide,
        nuclei(n, width, height),
        layer="nuclei",
    )
    assert imported == n
    log_in(page, site, "caen-patho")
    open_annotated(page, site, site.cmu)  # fitted: the whole slide, every shape, in view
    page.wait_for_function(f"iain.annotations.drawn >= {n}", timeout=60_000)
    assert page.evaluate("iain.annotations.mode") == "shapes"
    # the class the import created is offered in the picker, with its colour
    assert page.locator("#annotation-class option[value='Nucleus']").count() == 1
    # one hexagon every ~7 screen px: a good share of the canvas is painted
    box = page.locator("#osd").bounding_box()
    assert box is not None
    painted = opaque_pixels(page)
    assert painted > 0.1 * box["width"] * box["height"] * 0.6  # the slide covers ~60 %
    page.locator("#osd").screenshot(path=str(artifacts / f"annotations-{n}.png"))

    # the same pan with the layer switched off: what the viewer costs alone, on this machine now
    page.uncheck("#annotations-on")
    baseline = measure_pan(page, n, artifacts, "off")
    page.check("#annotations-on")
    annotations_idle(page)
    result = measure_pan(page, n, artifacts, "on")
    # generous (the machine is shared and chromium renders in software); the figures are logged
    assert result["frame_ms_p95"] < max(200, 3 * baseline["frame_ms_p95"])
    annotations_idle(page)
    assert page.evaluate("iain.annotations.drawn") >= n  # still all there after the pan

    # low zoom with more shapes than the layer draws: the density raster instead
    page.evaluate("iain.annotations.maxShapes = 1000; iain.annotations.reload()")
    annotations_idle(page)
    assert page.evaluate("iain.annotations.mode") == "density"
    assert opaque_pixels(page) > 0.3 * painted
    rgba = layer_pixel(page, width / 2, height / 2, radius=0)
    assert rgba[0] > 200 and rgba[2] < 60 and rgba[3] > 30  # orange cells, not blue outlines
    page.locator("#osd").screenshot(path=str(artifacts / f"annotations-{n}-density.png"))


def test_every_tool_stores_the_shape_the_server_expects(browser: Browser, clean: Site) -> None:
    site = clean
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    page = context.new_page()
    try:
        log_in(page, site, "caen-patho")
        open_annotated(page, site, site.cmu)
        page.select_option("#annotation-class", "Stroma")
        page.click("button[data-tool=point]")
        page.mouse.click(*to_page(page, 400, 400))
        wait_status(page, "Saved point")
        page.click("button[data-tool=line]")
        drag(page, (400, 600), (1400, 800))
        wait_status(page, "Saved line")
        page.click("button[data-tool=ellipse]")
        drag(page, (500, 1000), (1500, 1600))
        wait_status(page, "Saved ellipse")
        page.click("button[data-tool=freehand]")
        page.mouse.move(*to_page(page, 600, 2000))
        page.mouse.down()
        for x, y in ((900, 1900), (1300, 2100), (1200, 2500), (700, 2400)):
            page.mouse.move(*to_page(page, x, y), steps=5)
        page.mouse.up()
        wait_status(page, "Saved freehand")
        page.click("button[data-tool=freehand]")
        got = {f["iain"]["kind"]: f for f in stored(page, site, site.cmu)}
        assert sorted(got) == ["ellipse", "freehand", "line", "point"]
        assert got["point"]["geometry"]["type"] == "Point"
        assert got["point"]["geometry"]["coordinates"] == pytest.approx([400, 400], abs=4)
        assert got["line"]["geometry"]["type"] == "LineString"
        (ring,) = got["ellipse"]["geometry"]["coordinates"]
        assert len(ring) == 65 and ring[0] == ring[-1]
        xs, ys = [p[0] for p in ring], [p[1] for p in ring]
        assert (min(xs), max(xs)) == pytest.approx((500, 1500), abs=5)
        assert (min(ys), max(ys)) == pytest.approx((1000, 1600), abs=5)
        (free,) = got["freehand"]["geometry"]["coordinates"]
        assert got["freehand"]["geometry"]["type"] == "Polygon" and len(free) > 10
        assert all(f["iain"]["class"] == "Stroma" for f in got.values())
        annotations_idle(page)
        assert near(layer_pixel(page, 1500, 1300), (0x1F, 0x77, 0xB4))  # ellipse's right edge
    finally:
        context.close()

    # the centre admin sees them, read only: another user's annotation cannot be changed
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    page = context.new_page()
    try:
        log_in(page, site, "caen-admin")
        open_annotated(page, site, site.cmu)
        assert page.evaluate("iain.annotations.drawn") == 4
        page.click("button[data-tool=select]")
        select_at(page, 1000, 1300)
        owner = page.locator("#annotation-owner").inner_text()
        assert "ellipse by caen-patho" in owner and "read only" in owner
        assert page.locator("#annotation-delete").is_disabled()
        assert page.locator("#annotation-save").is_disabled()
    finally:
        context.close()

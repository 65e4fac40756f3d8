"""Label overlay tiles, descriptor and outlines over the real app (no accounts) and uvicorn."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from tests.share.conftest import LiveServer
from tests.viewer.overlay_labels import RGBA, regions_mask, write_labels
from tests.viewer.pyramids import synthetic_rgb, write_pyramid
from tiling.layout import PyramidSpec
from viewer.app import create_app
from viewer.config import ServerSettings

WIDTH, HEIGHT, TILE = 1000, 700, 256  # DeepZoom levels 0..10; 10 = stored level 0


@dataclass(frozen=True)
class Served:
    url: str
    slide_id: str
    store: Path
    mask: npt.NDArray[np.uint8]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    data = tmp_path / "data"
    store = data / "labelled.zarr"
    geometry = write_pyramid(store, synthetic_rgb(WIDTH, HEIGHT, seed=4), tile=TILE)
    mask = regions_mask(WIDTH, HEIGHT)
    write_labels(store, geometry, mask)
    write_pyramid(data / "running.zarr", synthetic_rgb(300, 200, seed=5), tile=TILE)
    running = data / "running.zarr"
    write_labels(running, geometry_of(300, 200), regions_mask(300, 200), complete=False)
    settings = ServerSettings(data=str(data), cache_dir=str(tmp_path / "cache"), loop="asyncio")
    app = create_app(settings)
    with LiveServer(app) as url:
        slides = httpx.get(f"{url}/api/slides").json()
        ids = {s["name"]: s["id"] for s in slides}
        yield Served(url, ids["labelled"], store, mask)


def geometry_of(width: int, height: int) -> PyramidSpec:
    return PyramidSpec(width, height, TILE, TILE, 0.5, 0.5)


def _rgba(data: bytes) -> npt.NDArray[np.uint8]:
    image = Image.open(io.BytesIO(data))
    assert image.mode == "RGBA"
    return np.asarray(image)


def test_slide_json_lists_the_label_layer_pending_validation(served: Served) -> None:
    with httpx.Client(base_url=served.url) as c:
        slide = c.get(f"/api/slides/{served.slide_id}").json()
        (overlay,) = slide["overlays"]
        assert overlay["name"] == "toy" and overlay["opacity"] == 0.5
        assert overlay["status"] == "pending validation" and overlay["ai_generated"] is True
        assert overlay["dzi_url"] == f"/slides/{served.slide_id}/labels/toy.dzi"
        assert overlay["colors"][2] == [220, 0, 0]
        # a run still being written is not offered
        others = [s for s in c.get("/api/slides").json() if s["name"] == "running"]
        assert c.get(f"/api/slides/{others[0]['id']}").json()["overlays"] == []
        running_tile = c.get(f"/slides/{others[0]['id']}/labels/toy_files/9/0_0.png")
        assert running_tile.status_code == 404


def test_overlay_dzi_has_the_slides_geometry(served: Served) -> None:
    with httpx.Client(base_url=served.url) as c:
        slide_dzi = c.get(f"/slides/{served.slide_id}.dzi").text
        label_dzi = c.get(f"/slides/{served.slide_id}/labels/toy.dzi")
        assert label_dzi.status_code == 200
        assert label_dzi.text == slide_dzi.replace('Format="jpeg"', 'Format="png"')


def test_overlay_tiles_are_the_mask_in_class_colours(served: Served) -> None:
    base = f"/slides/{served.slide_id}/labels/toy_files"
    with httpx.Client(base_url=served.url) as c:
        for col, row in ((1, 0), (1, 1), (3, 2)):  # inner tiles and the bottom-right edge tile
            r = c.get(f"{base}/10/{col}_{row}.png")
            assert r.status_code == 200 and r.headers["content-type"] == "image/png"
            crop = served.mask[row * TILE : (row + 1) * TILE, col * TILE : (col + 1) * TILE]
            np.testing.assert_array_equal(_rgba(r.content), RGBA[crop])
        # stored level 1 (DeepZoom 9): the nearest-neighbour reduction inference wrote
        half = _rgba(c.get(f"{base}/9/0_0.png").content)
        np.testing.assert_array_equal(half, RGBA[served.mask[::2, ::2][:256, :256]])
        # below the stored pyramid: one tiny tile, still the mask's colours
        tiny = _rgba(c.get(f"{base}/2/0_0.png").content)
        assert tiny.shape == (3, 4, 4)  # ceil(700 / 256) x ceil(1000 / 256), RGBA
        assert (tiny[..., 3] > 0).any()
        assert c.get(f"{base}/10/4_0.png").status_code == 404  # outside the grid
        assert c.get(f"{base}/11/0_0.png").status_code == 404  # no such level


def test_overlay_tiles_are_cached_with_strong_etags(served: Served) -> None:
    url = f"/slides/{served.slide_id}/labels/toy_files/10/1_1.png"
    with httpx.Client(base_url=served.url) as c:
        first = c.get(url)
        etag = first.headers["etag"]
        assert etag.startswith('"') and not etag.startswith("W/")
        assert "immutable" in first.headers["cache-control"]
        assert c.get(url, headers={"if-none-match": etag}).status_code == 304
        # computed once: the mask chunk is gone, the cached tile is still served
        (served.store / "labels" / "toy" / "0" / "c" / "1" / "1").unlink()
        assert c.get(url).content == first.content


def test_unknown_or_bad_label_names_are_404(served: Served) -> None:
    with httpx.Client(base_url=served.url) as c:
        assert c.get(f"/slides/{served.slide_id}/labels/nope.dzi").status_code == 404
        tile = c.get(f"/slides/{served.slide_id}/labels/nope_files/10/0_0.png")
        assert tile.status_code == 404 and tile.json()["error"] == "slide_not_found"
        outlines = c.get(f"/api/slides/{served.slide_id}/labels/nope/outlines")
        assert outlines.status_code == 404
        assert c.get(f"/slides/{served.slide_id}/labels/..%2Ftoy.dzi").status_code in (400, 404)
        assert c.get(f"/slides/{'f' * 24}/labels/toy.dzi").status_code == 404


def test_outlines_are_the_stored_geojson(served: Served) -> None:
    with httpx.Client(base_url=served.url) as c:
        r = c.get(f"/api/slides/{served.slide_id}/labels/toy/outlines")
        assert r.status_code == 200 and r.headers["content-type"] == "application/geo+json"
        doc = r.json()
        names = sorted(f["properties"]["classification"]["name"] for f in doc["features"])
        assert names == ["epithelium", "tumour"]
        tumour = next(
            f for f in doc["features"] if f["properties"]["classification"]["name"] == "tumour"
        )
        xs = [p[0] for p in tumour["geometry"]["coordinates"][0]]
        assert min(xs) == pytest.approx(300, abs=1) and max(xs) == pytest.approx(620, abs=1)
        assert doc["properties"]["validation"] == "pending"

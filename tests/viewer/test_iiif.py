"""IIIF Image API 3.0: the iiif-validator package's level-0/1 tests against a real uvicorn,
plus direct checks of the stored-bytes shortcut and of bad parameters."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import uvicorn
from fastapi.testclient import TestClient

from tests.viewer.conftest import free_port, make_settings, wait_ready
from tests.viewer.pyramids import write_pyramid
from tiling.layout import chunk_key
from viewer.app import create_app

iiif_validator = pytest.importorskip("iiif_validator.validator")


def validator_image() -> np.ndarray:
    """The validator's reference image: 10 x 10 squares of 100 px in its known colours."""
    colours = iiif_validator.ValidationInfo().colorInfo
    image = np.zeros((1000, 1000, 3), np.uint8)
    for x in range(10):
        for y in range(10):
            image[y * 100 : (y + 1) * 100, x * 100 : (x + 1) * 100] = colours[x][y]
    return image


@pytest.fixture(scope="module")
def iiif_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    data = tmp_path_factory.mktemp("iiif")
    write_pyramid(data / "validator.zarr", validator_image(), tile=256, quality=95)
    app = create_app(make_settings(data, tmp_path_factory.mktemp("iiif-cache")))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_ready(f"http://127.0.0.1:{port}")
    with TestClient(app) as client:
        (slide,) = client.get("/api/slides").json()
    yield f"127.0.0.1:{port}", slide["id"]
    server.should_exit = True
    thread.join(timeout=10)


def level1_tests() -> list[str]:
    suite = iiif_validator.TestSuite(iiif_validator.ValidationInfo())
    return sorted(name for name, info in suite.list_tests("3.0").items() if int(info["level"]) <= 1)


def test_iiif_validator_level1(iiif_server: tuple[str, str]) -> None:
    server, identifier = iiif_server
    suite = iiif_validator.TestSuite(iiif_validator.ValidationInfo())
    failures = {}
    names = level1_tests()
    assert len(names) >= 15
    for name in names:
        result = iiif_validator.ImageAPI(identifier, server, "iiif/3", "http", "", "3.0", False)
        suite.run_test(name, result)
        if result.exception is not None:
            failures[name] = str(result.exception)
    assert failures == {}


def test_tile_aligned_request_is_the_stored_chunk(
    client: TestClient, slide_ids: dict[str, str], data_dir: Path
) -> None:
    slide = slide_ids["alpha"]
    stored = (data_dir / "alpha.zarr" / chunk_key(1, 0, 0)).read_bytes()
    response = client.get(f"/iiif/3/{slide}/0,0,512,512/256,/0/default.jpg")
    assert response.status_code == 200 and response.content == stored
    assert response.headers["cache-control"].endswith("immutable")


def test_info_json(client: TestClient, slide_ids: dict[str, str]) -> None:
    slide = slide_ids["alpha"]
    info = client.get(f"/iiif/3/{slide}/info.json").json()
    assert info["id"].endswith(f"/iiif/3/{slide}") and info["type"] == "ImageService3"
    assert (info["width"], info["height"], info["profile"]) == (1000, 700, "level1")
    assert info["tiles"] == [{"width": 256, "height": 256, "scaleFactors": [1, 2, 4]}]


def test_region_and_size(client: TestClient, slide_ids: dict[str, str], pixels: np.ndarray) -> None:
    slide = slide_ids["alpha"]
    got = imagecodecs.jpeg8_decode(
        client.get(f"/iiif/3/{slide}/100,50,300,200/max/0/color.jpg").content
    )
    assert got.shape == (200, 300, 3)
    assert np.abs(got.astype(int) - pixels[50:250, 100:400].astype(int)).mean() < 6
    half = imagecodecs.jpeg8_decode(
        client.get(f"/iiif/3/{slide}/square/,350/0/default.jpg").content
    )
    assert half.shape == (350, 350, 3)


@pytest.mark.parametrize(
    "tail",
    [
        "full/max/90/default.jpg",  # rotation: level 2
        "full/max/0/gray.jpg",
        "full/max/0/default.png",
        "full/max/0/default.tif",
        "0,0,0,10/max/0/default.jpg",
        "5000,0,10,10/max/0/default.jpg",
        "full/2000,/0/default.jpg",  # upscaling without ^
        "full/^99999,/0/default.jpg",
        "full/0,/0/default.jpg",
        "nonsense/max/0/default.jpg",
        "full/max/abc/default.jpg",
        "-1,0,10,10/max/0/default.jpg",
    ],
)
def test_bad_image_requests_are_400(
    client: TestClient, slide_ids: dict[str, str], tail: str
) -> None:
    response = client.get(f"/iiif/3/{slide_ids['alpha']}/{tail}")
    assert response.status_code == 400, response.text
    assert response.json()["error"] in {"invalid_tile_request", "unsupported_tile_request"}


def test_thumbnail_comes_from_the_pyramid(client: TestClient, slide_ids: dict[str, str]) -> None:
    slide = slide_ids["alpha"]
    response = client.get(f"/api/slides/{slide}/thumbnail", params={"max": 128})
    assert response.status_code == 200
    assert imagecodecs.jpeg8_decode(response.content).shape == (90, 128, 3)
    assert client.get(f"/api/slides/{slide}/thumbnail", params={"max": 0}).status_code == 422
    assert client.get(f"/api/slides/{slide}/thumbnail", params={"max": "x"}).status_code == 422
    tiny = client.get(f"/api/slides/{slide_ids['tiny']}/thumbnail")
    assert imagecodecs.jpeg8_decode(tiny.content).shape == (30, 40, 3)  # never upscaled

"""Fixtures for the viewer tests.

Server: tifffile-free pyramids written in tmp, apps, a real uvicorn. Browser: Debian's chromium
through Playwright, the real sample slide converted by ``tiling``, a tifffile-made ruler slide,
and a stub backend for the overlay contract the real app does not serve yet.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import openslide
import pytest
import tifffile
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, Page

from share.demo import DEMO_ACCOUNTS
from tests.conftest import REPO_ROOT
from tests.viewer._stub_backend import LiveServer, StubSlide, create_stub_app
from tests.viewer.pyramids import synthetic_rgb, write_pyramid
from viewer.app import create_app
from viewer.config import ServerSettings

WIDTH, HEIGHT, TILE = 1000, 700, 256  # 4x3 tiles at level 0, edge tiles on both sides


@pytest.fixture(scope="session")
def pixels() -> np.ndarray:
    return synthetic_rgb(WIDTH, HEIGHT, seed=1)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory, pixels: np.ndarray) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_pyramid(root / "alpha.zarr", pixels, tile=TILE)
    write_pyramid(root / "tiny.zarr", synthetic_rgb(40, 30, seed=2), tile=TILE, mpp=None)
    # white right half with skipped chunks: missing chunks are served as white tiles
    sparse = synthetic_rgb(600, 300, seed=3)
    sparse[:, 256:] = 255
    write_pyramid(root / "sparse.zarr", sparse, tile=TILE, skip_white=True)
    (root / "broken.zarr").mkdir()
    (root / "broken.zarr" / "zarr.json").write_text("{not json")
    (root / "notes.txt").write_text("not a pyramid")
    return root


DEMO_PASSWORDS = {a.username: a.password for a in DEMO_ACCOUNTS}


def api_log_in(page: Page, base_url: str, username: str) -> None:
    """A demo account's session in ``page``'s browser context, through ``POST /api/login``
    (the login page itself is tested once, in ``test_annotations_browser``)."""
    answer = page.request.post(
        f"{base_url}/api/login",
        data={"username": username, "password": DEMO_PASSWORDS[username]},
    )
    assert answer.ok, answer.text()


def make_settings(data: Path | str, cache: Path, **changes: object) -> ServerSettings:
    return ServerSettings(data=str(data), cache_dir=str(cache), catalog_refresh_s=0.5).with_(
        **changes
    )


@pytest.fixture(scope="session")
def settings(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> ServerSettings:
    return make_settings(data_dir, tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def app(settings: ServerSettings) -> FastAPI:
    return create_app(settings)


@pytest.fixture(scope="session")
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def slide_ids(client: TestClient) -> dict[str, str]:
    return {s["name"]: s["id"] for s in client.get("/api/slides").json()}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_ready(base: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{base} not ready")


@pytest.fixture(scope="session")
def live_server(app: FastAPI) -> Iterator[str]:
    """The app under a real uvicorn (one worker, in a thread) on 127.0.0.1:random."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    wait_ready(base)
    yield base
    server.should_exit = True
    thread.join(timeout=10)


# ---------------------------------------------------------------- browser tests

ARTIFACTS = REPO_ROOT / "test-artifacts"

# The ruler slide: two red discs RULER_GAP_PX apart on one row, four blue discs at the corners
# of an AREA_W_PX x AREA_H_PX rectangle; mpp written into the TIFF's resolution tags.
RULER_MPP = 0.25
RULER_SIZE = (4000, 3000)  # (width, height)
RULER_A = (1000, 1100)
RULER_GAP_PX = 2000
AREA_ORIGIN = (1200, 1700)
AREA_W_PX, AREA_H_PX = 1600, 1000


def _disc(pixels: np.ndarray, centre: tuple[int, int], radius: int, rgb: tuple[int, ...]) -> None:
    x0, y0 = centre
    ys, xs = np.ogrid[: pixels.shape[0], : pixels.shape[1]]
    pixels[(xs - x0) ** 2 + (ys - y0) ** 2 <= radius**2] = rgb


@pytest.fixture(scope="session")
def cmu_pixels(slides_dir: Path) -> np.ndarray:
    """Level 0 of the real CMU-1-Small-Region.svs (2220 x 2967), as (y, x, 3) uint8."""
    with openslide.OpenSlide(slides_dir / "CMU-1-Small-Region.svs") as slide:
        region = slide.read_region((0, 0), 0, slide.dimensions).convert("RGB")
    return np.asarray(region)


@pytest.fixture(scope="session")
def ruler_tiff(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TIFF written with tifffile whose resolution tags say RULER_MPP µm per pixel."""
    width, height = RULER_SIZE
    pixels = np.full((height, width, 3), 236, np.uint8)
    _disc(pixels, RULER_A, 14, (255, 0, 0))
    _disc(pixels, (RULER_A[0] + RULER_GAP_PX, RULER_A[1]), 14, (255, 0, 0))
    x0, y0 = AREA_ORIGIN
    for corner in (
        (x0, y0),
        (x0 + AREA_W_PX, y0),
        (x0 + AREA_W_PX, y0 + AREA_H_PX),
        (x0, y0 + AREA_H_PX),
    ):
        _disc(pixels, corner, 14, (0, 0, 255))
    path = tmp_path_factory.mktemp("ruler") / "ruler.tif"
    per_cm = 1e4 / RULER_MPP
    tifffile.imwrite(
        path,
        pixels,
        tile=(256, 256),
        photometric="rgb",
        resolution=(per_cm, per_cm),
        resolutionunit="CENTIMETER",
    )
    return path


def _mpp_from_tiff(path: Path) -> float:
    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        num, den = page.tags["XResolution"].value
        assert page.tags["ResolutionUnit"].value == tifffile.RESUNIT.CENTIMETER
        return float(1e4 * den / num)


@pytest.fixture(scope="session")
def stub_server(cmu_pixels: np.ndarray, ruler_tiff: Path) -> Iterator[LiveServer]:
    tissue = (cmu_pixels.min(axis=2) < 200)[..., None]
    label = np.where(tissue, np.array([220, 30, 30], np.uint8), np.uint8(255)).astype(np.uint8)
    slides = [
        StubSlide(
            "cmu1", "CMU-1-Small-Region", cmu_pixels, 0.499, vendor="aperio", objective_power=20
        ),
        # The same slide as the inference issue will show it: with a label layer.
        StubSlide(
            "cmu1-labelled",
            "CMU-1-Small-Region",
            cmu_pixels,
            0.499,
            vendor="aperio",
            overlays=[{"name": "tissue", "dzi_url": "/slides/cmu1-tissue.dzi", "opacity": 0.5}],
            listed=False,
        ),
        StubSlide("cmu1-tissue", "tissue label", label, 0.499, listed=False),
        StubSlide("ruler", "ruler.tif", tifffile.imread(ruler_tiff), _mpp_from_tiff(ruler_tiff)),
    ]
    server = LiveServer(create_stub_app(slides))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def browser(shared_browser: Browser) -> Browser:
    """Debian's chromium through Playwright: the session's one browser (tests/conftest.py)."""
    return shared_browser


@pytest.fixture()
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1920, "height": 1080})
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    yield tab
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def viewer_data(
    tmp_path_factory: pytest.TempPathFactory, slides_dir: Path, ruler_tiff: Path
) -> Path:
    """The real sample slide and the ruler slide, converted by ``tiling`` as ``iain convert``."""
    from tiling.convert import build_pyramid
    from wsi import open_slide

    root = tmp_path_factory.mktemp("viewer-data")
    for source, name in ((slides_dir / "CMU-1-Small-Region.svs", "cmu1"), (ruler_tiff, "ruler")):
        reader = open_slide(source)
        try:
            build_pyramid(reader, root / f"{name}.zarr")
        finally:
            reader.close()
    return root


@pytest.fixture(scope="session")
def viewer_server(
    viewer_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """``create_app`` (tiles, API and these pages) under a real uvicorn on 127.0.0.1."""
    app = create_app(make_settings(viewer_data, tmp_path_factory.mktemp("viewer-cache")))
    server = LiveServer(app, lifespan="on")
    wait_ready(server.url)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def viewer_ids(viewer_server: LiveServer) -> dict[str, str]:
    """Opaque slide id by pyramid name (``cmu1``, ``ruler``)."""
    slides = httpx.get(f"{viewer_server.url}/api/slides").json()
    return {s["name"]: s["id"] for s in slides}

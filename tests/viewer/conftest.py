"""Fixtures for the server tests: tifffile-free pyramids written in tmp, apps, a real uvicorn."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

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

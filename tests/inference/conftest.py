"""Fixtures of the inference tests: a slide store with known regions, written with JPEG chunks."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from inference.engine import EngineOptions
from inference.errors import HTTP_STATUS, InferenceError, StoreNotFoundError
from inference.jobs import JobService, JobWorker
from inference.router import router
from tests.inference.helpers import regions_image, write_store

WIDTH, HEIGHT = 1200, 900
_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``slow`` inference tests run only with IAIN_SLOW=1 (pyproject's marker contract)."""
    if os.environ.get("IAIN_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set IAIN_SLOW=1")
    for item in items:
        if "slow" in item.keywords and _HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(skip)


@pytest.fixture
def regions() -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """(rgb, expected class mask) of the known-regions slide."""
    return regions_image(WIDTH, HEIGHT)


@pytest.fixture
def regions_store(
    tmp_path: Path, regions: tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]
) -> Path:
    """The known-regions slide as an IAIN pyramid, 0.5 µm/px, 256 px JPEG tiles."""
    return write_store(tmp_path / "regions.zarr", regions[0])


@dataclass
class JobsServer:
    """A real uvicorn on loopback serving the jobs router, and its worker (not started)."""

    url: str
    service: JobService
    worker: JobWorker
    stores: dict[str, Path]


def _app(service: JobService) -> FastAPI:
    app = FastAPI()
    app.state.inference_jobs = service
    app.include_router(router)

    @app.exception_handler(InferenceError)
    async def _inference_error(request: Request, exc: Exception) -> JSONResponse:
        status = next(HTTP_STATUS[c] for c in type(exc).__mro__ if c in HTTP_STATUS)
        code = getattr(exc, "code", "inference_error")
        return JSONResponse({"error": code, "detail": str(exc)}, status_code=status)

    return app


@pytest.fixture
def jobs_server(tmp_path: Path, regions_store: Path) -> Iterator[JobsServer]:
    stores = {"slide-1": regions_store}

    def resolve(slide_id: str) -> Path:
        try:
            return stores[slide_id]
        except KeyError:
            raise StoreNotFoundError(f"no slide {slide_id!r}") from None

    service = JobService(tmp_path / "jobs", resolve)
    worker = JobWorker(service, "cpu", EngineOptions(unit_chunks=1), poll_s=0.05)
    config = uvicorn.Config(_app(service), host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield JobsServer(f"http://127.0.0.1:{port}", service, worker, stores)
    finally:
        worker.stop()
        server.should_exit = True
        thread.join(timeout=10)

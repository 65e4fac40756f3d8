"""A minimal stand-in for the server half of issue 4, for the viewer's tests.

It answers the same HTTP contract as the real app (``/api/slides``, ``/api/slides/{id}``,
``/api/slides/{id}/thumbnail``, ``/slides/{id}.dzi``,
``/slides/{id}_files/{level}/{col}_{row}.jpeg``) from an in-memory image pyramid, and runs
under a real uvicorn on 127.0.0.1. Once ``viewer.app.create_app`` is on main the browser tests
can point at it instead.
"""

from __future__ import annotations

import io
import math
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import uvicorn
from fastapi import FastAPI, HTTPException, Response
from PIL import Image

from viewer.pages import install_pages

TILE = 256


@dataclass
class StubSlide:
    """One slide: level-0 RGB pixels (y, x, c) plus the metadata the list shows."""

    slide_id: str
    name: str
    pixels: npt.NDArray[np.uint8]
    mpp: float | None
    vendor: str = "generic-tiff"
    objective_power: float | None = None
    overlays: list[dict[str, Any]] = field(default_factory=list)
    listed: bool = True
    _levels: list[Image.Image] = field(default_factory=list, repr=False)

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def dzi_max_level(self) -> int:
        return math.ceil(math.log2(max(self.width, self.height)))

    def __post_init__(self) -> None:
        # Built up front: tile requests arrive on several threads at once.
        image = Image.fromarray(self.pixels)
        self._levels = [image]
        while image.width > 1 or image.height > 1:
            size = (math.ceil(image.width / 2), math.ceil(image.height / 2))
            image = image.resize(size, Image.Resampling.BOX)
            self._levels.append(image)

    def dzi_level(self, level: int) -> Image.Image:
        """DeepZoom level ``level`` (max level = full resolution)."""
        return self._levels[self.dzi_max_level - level]

    def json(self) -> dict[str, Any]:
        return {
            "id": self.slide_id,
            "name": self.name,
            "width": self.width,
            "height": self.height,
            "mpp": self.mpp,
            "vendor": self.vendor,
            "objective_power": self.objective_power,
            "tile_size": TILE,
            "overlays": self.overlays,
        }


def _jpeg(image: Image.Image, quality: int = 85) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=quality)
    return out.getvalue()


def create_stub_app(slides: list[StubSlide]) -> FastAPI:
    """The issue-4 HTTP contract over ``slides``, plus the real viewer pages."""
    by_id = {s.slide_id: s for s in slides}
    app = FastAPI()

    def get(slide_id: str) -> StubSlide:
        if slide_id not in by_id:
            raise HTTPException(404, "unknown slide")
        return by_id[slide_id]

    @app.get("/api/slides")
    def list_slides() -> list[dict[str, Any]]:
        return [s.json() for s in slides if s.listed]

    @app.get("/api/slides/{slide_id}")
    def one_slide(slide_id: str) -> dict[str, Any]:
        return get(slide_id).json()

    @app.get("/api/slides/{slide_id}/thumbnail")
    def thumbnail(slide_id: str) -> Response:
        image = Image.fromarray(get(slide_id).pixels)
        image.thumbnail((512, 512))
        return Response(_jpeg(image), media_type="image/jpeg")

    @app.get("/slides/{slide_id}.dzi")
    def dzi(slide_id: str) -> Response:
        s = get(slide_id)
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" '
            f'Format="jpeg" Overlap="0" TileSize="{TILE}">'
            f'<Size Width="{s.width}" Height="{s.height}"/></Image>'
        )
        return Response(xml, media_type="application/xml")

    @app.get("/slides/{slide_id}_files/{level}/{col}_{row}.jpeg")
    def tile(slide_id: str, level: int, col: int, row: int) -> Response:
        s = get(slide_id)
        if not 0 <= level <= s.dzi_max_level:
            raise HTTPException(404, "level")
        image = s.dzi_level(level)
        x, y = col * TILE, row * TILE
        if not (0 <= x < image.width and 0 <= y < image.height):
            raise HTTPException(404, "tile")
        box = (x, y, min(x + TILE, image.width), min(y + TILE, image.height))
        return Response(_jpeg(image.crop(box)), media_type="image/jpeg")

    # The pages ask the same access hook as the real app's tiles; the stub shows everything.
    app.state.slide_access = lambda request, slide_id: get(slide_id)
    install_pages(app)
    return app


class LiveServer:
    """uvicorn serving ``app`` on a free loopback port, in a thread, until :meth:`stop`."""

    def __init__(self, app: FastAPI, lifespan: str = "off") -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self.port = int(self._sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, log_level="warning", ws="none", lifespan=lifespan, access_log=False
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()

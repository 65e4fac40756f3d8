"""A stand-in tile server for ``bench_wan`` until ``iain serve`` is on main.

One slide (``IAIN_WAN_SLIDE``), the issue-4 HTTP contract (``/api/slides/{id}``, DZI descriptor and
tiles) and the real viewer pages. Tiles are cut with OpenSlide's ``DeepZoomGenerator`` (256 px,
no overlap, JPEG quality ``IAIN_WAN_QUALITY``) and kept in a bounded LRU, so a second pass sees
the server as IAIN serves stored chunks: bytes from memory, no decode.

Run: ``IAIN_WAN_SLIDE=big.svs python -m uvicorn --factory benchmarks._wan_backend:create_app``.
"""

from __future__ import annotations

import functools
import io
import os
from pathlib import Path
from typing import Any

import openslide
from fastapi import FastAPI, HTTPException, Response
from openslide.deepzoom import DeepZoomGenerator

from viewer.pages import install_pages

SLIDE_ID = "big"
TILE = 256


def create_app() -> FastAPI:
    path = Path(os.environ["IAIN_WAN_SLIDE"])
    quality = int(os.environ.get("IAIN_WAN_QUALITY", "75"))
    slide = openslide.OpenSlide(path)
    dz = DeepZoomGenerator(slide, tile_size=TILE, overlap=0, limit_bounds=False)
    width, height = slide.dimensions
    mpp = float(slide.properties.get(openslide.PROPERTY_NAME_MPP_X, "0.499"))
    meta: dict[str, Any] = {
        "id": SLIDE_ID,
        "name": path.name,
        "width": width,
        "height": height,
        "mpp": mpp,
        "vendor": slide.properties.get(openslide.PROPERTY_NAME_VENDOR),
        "tile_size": TILE,
        "overlays": [],
    }
    app = FastAPI()

    @functools.lru_cache(maxsize=12_000)
    def tile_bytes(level: int, col: int, row: int) -> bytes:
        out = io.BytesIO()
        dz.get_tile(level, (col, row)).convert("RGB").save(out, "JPEG", quality=quality)
        return out.getvalue()

    @app.get("/api/slides")
    def list_slides() -> list[dict[str, Any]]:
        return [meta]

    @app.get("/api/slides/{slide_id}")
    def one_slide(slide_id: str) -> dict[str, Any]:
        if slide_id != SLIDE_ID:
            raise HTTPException(404, "unknown slide")
        return meta

    @app.get("/slides/{slide_id}.dzi")
    def dzi(slide_id: str) -> Response:
        if slide_id != SLIDE_ID:
            raise HTTPException(404, "unknown slide")
        return Response(dz.get_dzi("jpeg"), media_type="application/xml")

    @app.get("/slides/{slide_id}_files/{level}/{col}_{row}.jpeg")
    def tile(slide_id: str, level: int, col: int, row: int) -> Response:
        if slide_id != SLIDE_ID or not 0 <= level < dz.level_count:
            raise HTTPException(404, "unknown tile")
        cols, rows = dz.level_tiles[level]
        if not (0 <= col < cols and 0 <= row < rows):
            raise HTTPException(404, "unknown tile")
        return Response(
            tile_bytes(level, col, row),
            media_type="image/jpeg",
            headers={"Cache-Control": "public, max-age=31536000, immutable"},
        )

    install_pages(app)
    return app

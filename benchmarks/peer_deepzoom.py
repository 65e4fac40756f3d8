"""Minimal peer (c): OpenSlide's DeepZoomGenerator.get_tile + PIL JPEG per request.

``python -m benchmarks.peer_deepzoom SLIDE PORT WORKERS``; GET /{level}/{col}_{row}.jpeg,
DeepZoom levels with tile 256, overlap 0 (the same numbering as IAIN's DZI).
"""

from __future__ import annotations

import io
import sys

import openslide
from openslide.deepzoom import DeepZoomGenerator
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from benchmarks._forked import serve_forked

SLIDE = sys.argv[1]
GENERATOR: DeepZoomGenerator | None = None


def tile(request: Request) -> Response:  # sync: Starlette runs it in the threadpool
    global GENERATOR
    if GENERATOR is None:  # opened per worker process, after the fork
        GENERATOR = DeepZoomGenerator(
            openslide.OpenSlide(SLIDE), tile_size=256, overlap=0, limit_bounds=False
        )
    level = int(request.path_params["level"])
    address = (int(request.path_params["col"]), int(request.path_params["row"]))
    try:
        image = GENERATOR.get_tile(level, address)
    except ValueError:
        return Response(status_code=404)
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=85)
    return Response(buffer.getvalue(), media_type="image/jpeg")


app = Starlette(routes=[Route("/{level:int}/{col:int}_{row:int}.jpeg", tile)])

if __name__ == "__main__":
    serve_forked(app, int(sys.argv[2]), int(sys.argv[3]))

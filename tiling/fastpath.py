"""A raw ASGI fast path for DeepZoom tiles, in front of FastAPI.

A tile that needs no decoding (a whole stored chunk on local disk, or a computed tile
already in this worker's memory cache) is answered here: regex match, the same
``app.state.slide_access`` authorisation hook as every route, one file read, two ASGI
messages. Anything else -- errors, tiles to compute, remote stores -- falls through to
the FastAPI route, which does the same work the slow way, so behaviour is identical.
FastAPI routing and dependency injection cost more than the tile read itself.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from tiling.errors import TilingError
from tiling.router import IMMUTABLE, etag_matches
from tiling.tiles import TileService

__all__ = ["TileFastPath"]

logger = logging.getLogger(__name__)

_DZ_TILE = re.compile(
    r"/slides/([0-9a-f]{1,64})_files/(0|[1-9][0-9]{0,2})/(0|[1-9][0-9]{0,8})_(0|[1-9][0-9]{0,8})\.jpeg"
)
_CACHE_CONTROL = (b"cache-control", IMMUTABLE.encode())
_JPEG = (b"content-type", b"image/jpeg")


class TileFastPath:
    """ASGI middleware: serve cheap DeepZoom tiles directly, pass everything else on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            match = _DZ_TILE.fullmatch(scope["path"])
            encoded = b"%" in scope.get("raw_path", b"%")  # tricks go the slow, checked way
            if match is not None and not encoded and await self._serve(scope, send, match):
                return
        await self.app(scope, receive, send)

    async def _serve(self, scope: Scope, send: Send, match: re.Match[str]) -> bool:
        state: Any = scope["app"].state
        request = Request(scope)
        try:
            ref = state.slide_access(request, match[1])
            if ref.store.local_root is None:
                return False  # remote reads block: leave them to the threadpool
            tiles: TileService = state.tiles
            tile = tiles.dz_tile_cheap(ref, int(match[2]), int(match[3]), int(match[4]))
        except TilingError:
            return False  # the route answers with the mapped error
        if tile is None:
            return False
        etag = tile.etag.encode()
        if etag_matches(request.headers.get("if-none-match"), tile.etag):
            headers = [(b"etag", etag), _CACHE_CONTROL]
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return True
        headers = [
            _JPEG,
            (b"content-length", str(len(tile.data)).encode()),
            (b"etag", etag),
            _CACHE_CONTROL,
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": tile.data})
        return True

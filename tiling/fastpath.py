"""A raw ASGI fast path for DeepZoom tiles, taken before FastAPI's routing.

A tile that needs no decoding (a whole stored chunk, or a computed tile already in this
worker's memory cache) is answered here: regex match, the same
``app.state.slide_access`` authorisation hook as every route, one cached or local read,
two ASGI messages. Anything else -- errors, tiles to compute, remote stores, encoded
paths -- returns False and the FastAPI route does the same work the slow way, so the
behaviour is identical. FastAPI's routing and dependency injection cost more than the
tile read itself (measured: benchmarks/RESULTS.md).

It is an ASGI middleware added first by ``create_app``, so middleware added later (the
accounts package's authentication) wraps it and has run when the access hook is asked.
A slide the hook resolved is left in the scope (:data:`RESOLVED_KEY`) so the route does
not ask twice (the hook may count views).
"""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from tiling.errors import TilingError
from tiling.router import IMMUTABLE, PRIVATE_IMMUTABLE, GrantCheck, etag_matches
from tiling.tiles import Tile, TileService

__all__ = ["RESOLVED_KEY", "TileFastPath", "serve_fast_tile"]

RESOLVED_KEY = "iain.resolved_slide"  # scope key: (slide_id, what slide_access returned)

_DZ_TILE = re.compile(
    r"/slides/([0-9a-f]{1,64})_files/(0|[1-9][0-9]{0,2})/(0|[1-9][0-9]{0,8})_(0|[1-9][0-9]{0,8})\.jpeg"
)
_GRANTED_CHUNK = re.compile(
    r"/tiles/([0-9a-f]{1,64})/(0|[1-9][0-9]?)/(0|[1-9][0-9]{0,8})/(0|[1-9][0-9]{0,8})"
)
_CACHE_CONTROL = (b"cache-control", IMMUTABLE.encode())
_PRIVATE_CACHE_CONTROL = (b"cache-control", PRIVATE_IMMUTABLE.encode())
_JPEG = (b"content-type", b"image/jpeg")


async def serve_fast_tile(state: Any, scope: Scope, send: Send) -> bool:
    """Answer a cheap DeepZoom tile request; False when the regular route must answer."""
    if scope["method"] != "GET" or b"%" in scope.get("raw_path", b"%"):
        return False  # percent-encoded tricks: the checked route decides
    path: str = scope["path"]
    if path.startswith("/tiles/"):
        return await _granted_chunk(state, scope, send)
    match = _DZ_TILE.fullmatch(path)
    if match is None:
        return False
    try:
        ref = state.slide_access(Request(scope), match[1])
    except Exception:
        return False
    scope[RESOLVED_KEY] = (match[1], ref)
    if ref.store.local_root is None:
        return False  # remote reads block: leave them to the threadpool
    try:
        tiles: TileService = state.tiles
        tile = tiles.dz_tile_cheap(ref, int(match[2]), int(match[3]), int(match[4]))
    except TilingError:
        return False  # the route answers with the mapped error
    if tile is None:
        return False
    private = getattr(state, "private_tiles", False)
    await _send_tile(scope, send, tile, _PRIVATE_CACHE_CONTROL if private else _CACHE_CONTROL)
    return True


async def _granted_chunk(state: Any, scope: Scope, send: Send) -> bool:
    """A ``/tiles/`` chunk under a signed grant: a signature check, no session, no database."""
    match = _GRANTED_CHUNK.fullmatch(scope["path"])
    grants: GrantCheck | None = getattr(state, "tile_grants", None)
    if match is None or grants is None or not grants.allows(scope, match[1]):
        return False
    try:
        ref = state.catalog.get(match[1])
        if ref.store.local_root is None:
            return False
        tiles: TileService = state.tiles
        tile = tiles.chunk_tile(ref, int(match[2]), int(match[4]), int(match[3]))
    except TilingError:
        return False
    await _send_tile(scope, send, tile, _PRIVATE_CACHE_CONTROL)
    return True


async def _send_tile(
    scope: Scope, send: Send, tile: Tile, cache_control: tuple[bytes, bytes]
) -> None:
    etag = tile.etag.encode()
    if_none_match = next((v for k, v in scope["headers"] if k == b"if-none-match"), None)
    if if_none_match is not None and etag_matches(if_none_match.decode("latin-1"), tile.etag):
        headers = [(b"etag", etag), cache_control]
        await send({"type": "http.response.start", "status": 304, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
        return
    headers = [_JPEG, (b"content-length", b"%d" % len(tile.data)), (b"etag", etag), cache_control]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": tile.data})


class TileFastPath:
    """ASGI middleware: :func:`serve_fast_tile`, else the wrapped application."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and await serve_fast_tile(scope["app"].state, scope, send):
            return
        await self.app(scope, receive, send)

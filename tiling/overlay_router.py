"""HTTP edge of label overlays: DeepZoom descriptor and RGBA tiles, and the GeoJSON outlines.

Every route resolves its slide through the access hook (``tiling.router.get_slide``), so an
unknown or forbidden slide answers exactly like elsewhere; unknown label names are 404.
"""

from __future__ import annotations

import hashlib
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from tiling.overlay import NAME_PATTERN, label_dzi, label_outlines, label_tile
from tiling.router import REVALIDATE, Slide, TileIndex, Tiles, etag_matches, immutable_for

__all__ = ["router"]

router = APIRouter()

LabelName = Annotated[str, Path(pattern=NAME_PATTERN)]


def _revalidated(request: Request, data: bytes, media_type: str) -> Response:
    etag = '"' + hashlib.blake2b(data, digest_size=16).hexdigest() + '"'
    headers = {"ETag": etag, "Cache-Control": REVALIDATE}
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=media_type, headers=headers)


@router.get(
    "/slides/{slide_id}/labels/{name}.dzi",
    tags=["overlays"],
    response_class=Response,
    responses={200: {"content": {"application/xml": {}}}},
)
def label_dzi_route(request: Request, ref: Slide, tiles: Tiles, name: LabelName) -> Response:
    """The overlay's DeepZoom descriptor: the slide's geometry, PNG tiles."""
    return _revalidated(request, label_dzi(tiles, ref, name).encode(), "application/xml")


@router.get(
    "/slides/{slide_id}/labels/{name}_files/{level}/{col}_{row}.png",
    tags=["overlays"],
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
def label_tile_route(
    request: Request,
    ref: Slide,
    tiles: Tiles,
    name: LabelName,
    level: TileIndex,
    col: TileIndex,
    row: TileIndex,
) -> Response:
    """An overlay tile: class colours over a transparent background, computed once."""
    tile = label_tile(tiles, ref, name, level, col, row)
    headers = {"ETag": tile.etag, "Cache-Control": immutable_for(request)}
    if etag_matches(request.headers.get("if-none-match"), tile.etag):
        return Response(status_code=304, headers=headers)
    return Response(tile.data, media_type=tile.media_type, headers=headers)


@router.get(
    "/api/slides/{slide_id}/labels/{name}/outlines",
    tags=["overlays"],
    response_class=Response,
    responses={200: {"content": {"application/geo+json": {}}}},
)
def label_outlines_route(request: Request, ref: Slide, name: LabelName) -> Response:
    """The AI outlines as QuPath GeoJSON, level-0 pixel coordinates."""
    return _revalidated(request, label_outlines(ref, name), "application/geo+json")

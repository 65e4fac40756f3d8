"""HTTP edge of the tiling package: slide list, DeepZoom, IIIF Image API 3.0, the Zarr store
read-only, thumbnails.

Every slide route resolves its slide through ``app.state.slide_access(request, slide_id)``
(the authorisation hook; unknown and forbidden ids raise the same
:class:`PyramidNotFoundError`). Routes are plain ``def`` so blocking reads run in the
threadpool; the hot DeepZoom tile path is also answered without FastAPI by
:mod:`tiling.fastpath`. Tiles carry strong ETags derived from the slide id (a hash of
the pyramid's content metadata) and the request, and ``immutable`` caching.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from tiling.catalog import Catalog, SlideRef
from tiling.errors import InvalidTileRequestError, PyramidNotFoundError, TileGrantError
from tiling.iiif import check_rest, info_json, parse_region, parse_size
from tiling.layout import ASSOCIATED_GROUP, IAIN_ATTR
from tiling.overlay import overlay_entries
from tiling.tiles import Tile, TileService

__all__ = [
    "IMMUTABLE",
    "PRIVATE_IMMUTABLE",
    "SlideAccess",
    "allow_all",
    "etag_matches",
    "immutable_for",
    "router",
]

IMMUTABLE = "public, max-age=31536000, immutable"
# Tiles behind a signed grant: browsers may keep them, shared caches must not.
PRIVATE_IMMUTABLE = "private, max-age=31536000, immutable"
REVALIDATE = "no-cache"
SlideAccess = Callable[[Request, str], SlideRef]

# Store keys we serve: metadata documents and chunk keys of levels and labels, nothing else.
_ZARR_KEY = re.compile(
    r"(?:labels/(?:[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}/)?)?"
    r"(?:zarr\.json|(?:0|[1-9][0-9]{0,3})/(?:zarr\.json|c(?:/(?:0|[1-9][0-9]{0,8})){3}))"
)

_ENCODED_TRICKS = (b"%2f", b"%5c", b"%00", b"%2e")

router = APIRouter()


def allow_all(request: Request, slide_id: str) -> SlideRef:
    """Default authorisation: every catalogued slide is visible."""
    catalog: Catalog = request.app.state.catalog
    return catalog.get(slide_id)


def get_slide(request: Request, slide_id: Annotated[str, Path(max_length=64)]) -> SlideRef:
    raw_path = bytes(request.scope.get("raw_path") or b"").lower()
    if any(trick in raw_path for trick in _ENCODED_TRICKS):
        raise InvalidTileRequestError("encoded slashes, dots or NUL in the path")
    resolved = request.scope.get("iain.resolved_slide")  # set by tiling.fastpath
    if resolved is not None and resolved[0] == slide_id:
        ref: SlideRef = resolved[1]
        return ref
    access: SlideAccess = request.app.state.slide_access
    return access(request, slide_id)


class GrantCheck(Protocol):
    """``app.state.tile_grants`` (share/tile_grants.py): is there a live grant for the slide?"""

    def allows(self, scope: Any, slide_id: str) -> bool: ...


def granted_slide(request: Request, slide_id: str) -> SlideRef:
    """The slide of a ``/tiles/`` request whose cookies carry a live signed grant."""
    grants: GrantCheck | None = getattr(request.app.state, "tile_grants", None)
    if grants is None:
        raise PyramidNotFoundError("signed tiles are not enabled on this server")
    if not grants.allows(request.scope, slide_id):
        raise TileGrantError(
            f"no live tile grant for this slide: GET /api/slides/{slide_id}/tile-grant first"
        )
    catalog: Catalog = request.app.state.catalog
    return catalog.get(slide_id)


def get_tiles(request: Request) -> TileService:
    tiles: TileService = request.app.state.tiles
    return tiles


Slide = Annotated[SlideRef, Depends(get_slide)]
Tiles = Annotated[TileService, Depends(get_tiles)]
TileIndex = Annotated[int, Path(ge=0, le=1 << 30)]


def etag_matches(header: str | None, etag: str) -> bool:
    """If-None-Match comparison (weak comparison, as RFC 9110 asks for GET)."""
    if not header:
        return False
    if header.strip() == "*":
        return True
    return any(part.strip().removeprefix("W/") == etag for part in header.split(","))


def immutable_for(request: Request) -> str:
    """``Cache-Control`` of content-addressed responses: ``private`` when access is checked
    (``app.state.private_tiles``), so that a shared cache never hands one user's tiles to
    another; ``public`` when every slide is public anyway."""
    return PRIVATE_IMMUTABLE if getattr(request.app.state, "private_tiles", False) else IMMUTABLE


def _tile_response(request: Request, tile: Tile, cache_control: str | None = None) -> Response:
    headers = {"ETag": tile.etag, "Cache-Control": cache_control or immutable_for(request)}
    if etag_matches(request.headers.get("if-none-match"), tile.etag):
        return Response(status_code=304, headers=headers)
    return Response(tile.data, media_type=tile.media_type, headers=headers)


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


@router.get("/api/slides", tags=["slides"])
def list_slides(request: Request) -> list[dict[str, Any]]:
    """Every slide the caller may see."""
    catalog: Catalog = request.app.state.catalog
    access: SlideAccess = request.app.state.slide_access
    visible = []
    for ref in catalog.slides():
        try:
            visible.append(access(request, ref.id).to_json())
        except PyramidNotFoundError:
            continue
    return visible


@router.get("/api/slides/{slide_id}", tags=["slides"])
def slide_detail(request: Request, ref: Slide) -> dict[str, Any]:
    """The slide's description, with its finished AI label layers as ``overlays``."""
    reviews = getattr(request.app.state, "label_reviews", None)
    return {**ref.to_json(), "overlays": overlay_entries(ref, reviews)}


@router.get(
    "/api/slides/{slide_id}/thumbnail",
    tags=["slides"],
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}},
)
def thumbnail(
    request: Request,
    ref: Slide,
    tiles: Tiles,
    max_px: Annotated[int, Query(alias="max", ge=1, le=2048)] = 256,
) -> Response:
    """The whole slide fitted in max x max pixels, rendered from the pyramid only."""
    return _tile_response(request, tiles.thumbnail(ref, max_px))


@router.get(
    "/slides/{slide_id}.dzi",
    tags=["deepzoom"],
    response_class=Response,
    responses={200: {"content": {"application/xml": {}}}},
)
def dzi(request: Request, ref: Slide, tiles: Tiles) -> Response:
    """The DeepZoom descriptor: tile size = the pyramid's chunk size, overlap 0."""
    etag = f'"{ref.id}-dzi"'
    headers = {"ETag": etag, "Cache-Control": REVALIDATE}
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    return Response(tiles.dzi(ref), media_type="application/xml", headers=headers)


@router.get(
    "/slides/{slide_id}_files/{level}/{col}_{row}.jpeg",
    tags=["deepzoom"],
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}},
)
def dz_tile(
    request: Request, ref: Slide, tiles: Tiles, level: TileIndex, col: TileIndex, row: TileIndex
) -> Response:
    """A DeepZoom tile: the stored chunk's bytes when it is one, else computed once and cached."""
    return _tile_response(request, tiles.dz_tile(ref, level, col, row))


@router.get(
    "/tiles/{slide_id}/{level}/{row}/{col}",
    tags=["deepzoom"],
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}},
)
def granted_chunk(
    request: Request,
    slide_id: Annotated[str, Path(pattern="^[0-9a-f]{1,64}$")],
    tiles: Tiles,
    level: TileIndex,
    row: TileIndex,
    col: TileIndex,
) -> Response:
    """A stored chunk (a whole JPEG tile, edge chunks padded) for the holder of a signed grant:
    the same bytes nginx sends for this URL from the chunk file (``iain nginx-conf``)."""
    ref = granted_slide(request, slide_id)
    return _tile_response(request, tiles.chunk_tile(ref, level, col, row), PRIVATE_IMMUTABLE)


@router.get("/iiif/3/{slide_id}", tags=["iiif"], include_in_schema=False)
def iiif_base(request: Request, ref: Slide) -> RedirectResponse:
    return RedirectResponse(f"{_base_url(request)}/iiif/3/{ref.id}/info.json", status_code=303)


@router.get("/iiif/3/{slide_id}/info.json", tags=["iiif"])
def iiif_info(request: Request, ref: Slide) -> JSONResponse:
    """IIIF Image API 3.0 image information (level 1)."""
    return JSONResponse(
        info_json(ref, _base_url(request)),
        media_type='application/ld+json;profile="http://iiif.io/api/image/3/context.json"',
        headers={"Access-Control-Allow-Origin": "*", "Cache-Control": REVALIDATE},
    )


@router.get(
    "/iiif/3/{slide_id}/{region}/{size}/{rotation}/{quality}.{fmt}",
    tags=["iiif"],
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}},
)
def iiif_image(
    request: Request,
    ref: Slide,
    tiles: Tiles,
    region: Annotated[str, Path(max_length=64)],
    size: Annotated[str, Path(max_length=32)],
    rotation: Annotated[str, Path(max_length=16)],
    quality: Annotated[str, Path(max_length=16)],
    fmt: Annotated[str, Path(max_length=8)],
) -> Response:
    """A IIIF image request; tile-aligned requests are answered with stored chunk bytes."""
    box = parse_region(region, ref.spec.width, ref.spec.height)
    out = parse_size(size, box[2], box[3])
    check_rest(rotation, quality, fmt)
    response = _tile_response(request, tiles.render(ref, box, out))
    response.headers["Access-Control-Allow-Origin"] = "*"
    link = '<http://iiif.io/api/image/3/level1.json>;rel="profile"'
    response.headers["Link"] = link
    return response


def _public_root_metadata(raw: bytes) -> bytes:
    """The root zarr.json without IAIN's provenance block or consolidated associated images."""
    doc = json.loads(raw)
    attributes = doc.get("attributes") or {}
    iain = attributes.get(IAIN_ATTR)
    if isinstance(iain, dict):
        keep = ("name", "vendor", "objective_power", "mpp", "source_sha256")
        attributes[IAIN_ATTR] = {k: v for k, v in iain.items() if k in keep}
    consolidated = doc.get("consolidated_metadata")
    if isinstance(consolidated, dict) and isinstance(consolidated.get("metadata"), dict):
        consolidated["metadata"] = {
            k: v for k, v in consolidated["metadata"].items() if not k.startswith(ASSOCIATED_GROUP)
        }
    return json.dumps(doc).encode()


@router.get(
    "/zarr/{slide_id}/{key:path}",
    tags=["zarr"],
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def zarr_key(request: Request, ref: Slide, key: Annotated[str, Path(max_length=200)]) -> Response:
    """One key of the pyramid's Zarr v3 store: metadata and chunks of levels and labels only."""
    if not _ZARR_KEY.fullmatch(key):
        raise PyramidNotFoundError("no such key")
    data = ref.store.get(key)
    if data is None:
        raise PyramidNotFoundError("no such key")
    is_json = key.endswith("zarr.json")
    if key == "zarr.json":
        data = _public_root_metadata(data)
    etag = '"' + hashlib.blake2b(data, digest_size=16).hexdigest() + '"'
    headers = {
        "ETag": etag,
        "Cache-Control": REVALIDATE if is_json else immutable_for(request),
        "Access-Control-Allow-Origin": "*",
    }
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    media = "application/json" if is_json else "application/octet-stream"
    return Response(data, media_type=media, headers=headers)

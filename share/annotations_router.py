"""HTTP edge of annotations: ``/api/slides/{slide_id}/annotations...``.

Each route first resolves the slide through ``app.state.slide_access`` (404 when unknown or
not visible, exactly like tiles), then ``share.annotations`` asks ``authorize`` about the
annotation itself (403 when visible but not writable, 409 on a stale version).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from share import annotations as store
from share.accounts import Accounts
from share.authz import Principal, SlideRef
from share.errors import PayloadTooLargeError, SlideNotFoundError
from share.geometry import Kind
from share.web import principal_of

__all__ = ["router"]

router = APIRouter(prefix="/api/slides/{slide_id}/annotations", tags=["annotations"])


def _accounts(request: Request) -> Accounts:
    accounts: Accounts = request.app.state.accounts
    return accounts


def visible_slide(request: Request, slide_id: Annotated[str, Path(max_length=200)]) -> SlideRef:
    """The slide, checked by the one hook every slide route uses."""
    request.app.state.slide_access(request, slide_id)
    ref = _accounts(request).slide(slide_id)
    if ref is None:
        raise SlideNotFoundError(slide_id)
    return ref


def _limits(request: Request) -> store.Limits:
    settings = _accounts(request).settings
    return store.Limits(
        max_vertices=settings.annotation_max_vertices,
        max_features=settings.annotation_max_features,
    )


Slide = Annotated[SlideRef, Depends(visible_slide)]
Me = Annotated[Principal, Depends(principal_of)]
AccountsDep = Annotated[Accounts, Depends(_accounts)]
AnnotationId = Annotated[int, Path(ge=1, le=2**62)]


class AnnotationBody(BaseModel):
    geometry: dict[str, Any]
    kind: Kind | None = None
    class_name: str | None = Field(default=None, max_length=100)
    color: str | None = Field(default=None, pattern=r"^#[0-9a-fA-F]{6}$")
    comment: str = Field(default="", max_length=10_000)
    layer: str = Field(default="default", min_length=1, max_length=100)
    properties: dict[str, Any] = Field(default_factory=dict)

    def to_input(self) -> store.AnnotationInput:
        return store.AnnotationInput(
            geometry=self.geometry,
            kind=self.kind,
            class_name=self.class_name,
            color=self.color,
            comment=self.comment,
            layer=self.layer,
            properties=self.properties,
        )


class UpdateBody(AnnotationBody):
    version: int = Field(ge=1)


class RevertBody(BaseModel):
    to_version: int = Field(ge=1)
    version: int = Field(ge=1)


@router.get("", response_class=Response)
def viewport(
    slide: Slide,
    me: Me,
    accounts: AccountsDep,
    x: Annotated[float, Query(allow_inf_nan=False, ge=-1e8, le=1e8)],
    y: Annotated[float, Query(allow_inf_nan=False, ge=-1e8, le=1e8)],
    width: Annotated[float, Query(allow_inf_nan=False, gt=0, le=1e8)],
    height: Annotated[float, Query(allow_inf_nan=False, gt=0, le=1e8)],
    layer: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=50_000)] = 5000,
) -> Response:
    """Annotations meeting the viewport (level-0 px), from the spatial index."""
    view = store.Viewport(x, y, width, height)
    body = store.query_viewport(accounts.db, me, slide, view, layer=layer, limit=limit)
    return Response(body, media_type="application/geo+json")


@router.get("/density")
def density(
    slide: Slide,
    me: Me,
    accounts: AccountsDep,
    x: Annotated[float, Query(allow_inf_nan=False, ge=-1e8, le=1e8)],
    y: Annotated[float, Query(allow_inf_nan=False, ge=-1e8, le=1e8)],
    width: Annotated[float, Query(allow_inf_nan=False, gt=0, le=1e8)],
    height: Annotated[float, Query(allow_inf_nan=False, gt=0, le=1e8)],
    cols: Annotated[int, Query(ge=1, le=512)] = 64,
    rows: Annotated[int, Query(ge=1, le=512)] = 64,
    layer: Annotated[str | None, Query(max_length=100)] = None,
) -> dict[str, Any]:
    """Counts per cell over the viewport: the low-zoom view of 10^5+ annotations."""
    view = store.Viewport(x, y, width, height)
    grid = store.density(accounts.db, me, slide, view, cols=cols, rows=rows, layer=layer)
    return {"cols": cols, "rows": rows, "counts": grid}


@router.post("", status_code=201)
def create(
    slide: Slide, me: Me, accounts: AccountsDep, body: AnnotationBody, request: Request
) -> dict[str, Any]:
    return store.create(accounts.db, me, slide, body.to_input(), _limits(request))


@router.get("/export.geojson")
def export(
    slide: Slide,
    me: Me,
    accounts: AccountsDep,
    layer: Annotated[str | None, Query(max_length=100)] = None,
) -> StreamingResponse:
    """QuPath-compatible GeoJSON FeatureCollection."""
    chunks = store.export_geojson(accounts.db, me, slide, layer=layer)
    first = next(chunks)  # runs the authorisation check before the 200 is sent

    def body() -> Any:
        yield first
        yield from chunks

    return StreamingResponse(
        body(),
        media_type="application/geo+json",
        headers={"Content-Disposition": f'attachment; filename="{slide.slide_id}.geojson"'},
    )


@router.post("/import", status_code=201)
async def import_geojson(
    request: Request,
    slide: Slide,
    me: Me,
    layer: Annotated[str, Query(min_length=1, max_length=100)] = "default",
) -> JSONResponse:
    """Import a QuPath GeoJSON FeatureCollection (all or nothing)."""
    accounts = _accounts(request)
    cap = accounts.settings.import_max_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise PayloadTooLargeError(f"body of {declared} bytes exceeds {cap}")
    body = bytearray()  # the one copy of the body: the import's raw slices point into it
    async for chunk in request.stream():
        body += chunk
        if len(body) > cap:
            raise PayloadTooLargeError(f"body exceeds {cap} bytes")

    def work() -> int:
        return store.import_geojson(
            accounts.db, me, slide, body, layer=layer, limits=_limits(request)
        )

    count = await run_in_threadpool(work)
    return JSONResponse({"imported": count, "layer": layer}, status_code=201)


@router.get("/{annotation_id}")
def get(slide: Slide, me: Me, accounts: AccountsDep, annotation_id: AnnotationId) -> dict[str, Any]:
    return store.get(accounts.db, me, slide, annotation_id)


@router.put("/{annotation_id}")
def update(
    slide: Slide,
    me: Me,
    accounts: AccountsDep,
    annotation_id: AnnotationId,
    body: UpdateBody,
    request: Request,
) -> dict[str, Any]:
    """Replace an own annotation; ``version`` must be the current one (else 409)."""
    return store.update_annotation(
        accounts.db, me, slide, annotation_id, body.to_input(), body.version, _limits(request)
    )


@router.delete("/{annotation_id}")
def delete(
    slide: Slide,
    me: Me,
    accounts: AccountsDep,
    annotation_id: AnnotationId,
    version: Annotated[int, Query(ge=1)],
) -> dict[str, int]:
    return {"version": store.remove(accounts.db, me, slide, annotation_id, version)}


@router.get("/{annotation_id}/history")
def history(
    slide: Slide, me: Me, accounts: AccountsDep, annotation_id: AnnotationId
) -> list[dict[str, Any]]:
    return store.history(accounts.db, me, slide, annotation_id)


@router.post("/{annotation_id}/revert")
def revert(
    slide: Slide, me: Me, accounts: AccountsDep, annotation_id: AnnotationId, body: RevertBody
) -> dict[str, Any]:
    return store.revert(accounts.db, me, slide, annotation_id, body.to_version, body.version)


classes_router = APIRouter(tags=["annotations"])


@classes_router.get("/api/annotation-classes")
def classes(me: Me, accounts: AccountsDep) -> list[dict[str, str]]:
    return store.list_classes(accounts.db)

"""``create_app(settings)``: the FastAPI application that serves converted slides.

Errors raised by domain code map to HTTP in ONE table (:data:`ERROR_STATUS`), answered
as ``{"error": code, "detail": message}``. Nothing here is per-process state that
matters: the catalogue and caches are derived from the store, so any worker (or
machine) answers any request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from share.authz import Decision
from share.config import ShareSettings
from share.label_reviews import install_label_reviews
from share.router import install_share
from share.web import install_error_handlers as install_share_error_handlers
from tiling import errors as tiling_errors
from tiling.cache import DiskCache, MemoryCache, TileCache
from tiling.catalog import Catalog, SlideRef
from tiling.errors import PyramidNotFoundError
from tiling.fastpath import TileFastPath
from tiling.overlay_router import router as overlay_router
from tiling.router import allow_all
from tiling.router import router as tiling_router
from tiling.store import open_data_root
from tiling.tiles import TileService
from viewer.config import ServerSettings
from viewer.errors import ConfigError, OpenSeadragonMissingError, ViewerError
from viewer.pages import install_pages
from viewer.rcp_pages import install_rcp_pages
from wsi import errors as wsi_errors

if TYPE_CHECKING:  # torch is imported only when the jobs API is on
    from inference.config import InferenceSettings
    from inference.jobs import JobWorker

__all__ = ["ERROR_STATUS", "create_app", "create_app_from_env"]

logger = logging.getLogger(__name__)

# Most specific class first: the first isinstance match wins.
ERROR_STATUS: tuple[tuple[type[Exception], int], ...] = (
    (tiling_errors.PyramidNotFoundError, 404),
    (tiling_errors.TileOutOfRangeError, 404),
    (tiling_errors.TileGrantError, 403),
    (tiling_errors.InvalidLevelError, 404),
    (tiling_errors.InvalidTileRequestError, 400),
    (tiling_errors.UnsupportedTileRequestError, 400),
    (tiling_errors.OutputExistsError, 409),
    (tiling_errors.InvalidOutputError, 400),
    (tiling_errors.SourceReadError, 422),
    # stored data that cannot be read: the server's fault, answered as JSON all the same
    (tiling_errors.CorruptPyramidError, 500),
    (tiling_errors.ChunkDecodeError, 500),
    (tiling_errors.TilingError, 400),
    (wsi_errors.SlideNotFoundError, 404),
    (wsi_errors.UnsupportedFormatError, 415),
    (wsi_errors.SlideTooLargeError, 413),
    (wsi_errors.CorruptSlideError, 422),
    (wsi_errors.InvalidRegionError, 400),
    (wsi_errors.UnreadableRegionError, 422),
    (wsi_errors.SlideError, 422),
    (ConfigError, 400),
    (OpenSeadragonMissingError, 503),
    (ViewerError, 400),
)
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


def error_response(status: int, code: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status)


def _status_for(exc: Exception) -> int:
    return next((status for cls, status in ERROR_STATUS if isinstance(exc, cls)), 500)


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    status = _status_for(exc)
    logger.debug("%s -> %d %s", request.url.path, status, getattr(exc, "code", "?"))
    return error_response(status, str(getattr(exc, "code", "error")), str(exc))


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = "; ".join(
        f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg', '')}"
        for err in exc.errors()[:3]
    )
    return error_response(422, "invalid_request", problems)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
    return error_response(exc.status_code, code, str(exc.detail))


def _share_resolve(request: Request, slide_id: str, decision: Decision) -> SlideRef:
    """What tile routes get from the hook once ``authorize`` allowed: the catalogue entry,
    with the (possibly identifying) name replaced by the id for pseudonymised callers."""
    ref = allow_all(request, slide_id)
    return replace(ref, name=ref.id) if decision.pseudonymised else ref


def _share_discover(request: Request, slide_id: str) -> str | None:
    """Name of a catalogued slide not registered yet (found by a later catalogue refresh)."""
    try:
        return str(request.app.state.catalog.get(slide_id).name)
    except PyramidNotFoundError:
        return None


def _share_source(app: FastAPI, slide_id: str) -> Path | None:
    """The slide's local OME-Zarr directory (shares to peers are derived from it)."""
    try:
        root = app.state.catalog.get(slide_id).store.local_root
    except PyramidNotFoundError:
        return None
    return Path(root) if root else None


def create_app(
    settings: ServerSettings,
    share: ShareSettings | None = None,
    inference: InferenceSettings | None = None,
) -> FastAPI:
    """The application; the data store is opened and scanned in the lifespan.

    With ``share`` (what ``create_app_from_env`` passes) every route needs a session and
    each slide goes through ``share.authz.authorize``; without it every slide is public.
    With ``inference`` the jobs API is served (behind the same middleware and hook) and one
    job worker per configured device runs in the lifespan.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.catalog.refresh()
        if share is not None:  # slides found on disk belong to the default centre until moved
            refs = app.state.catalog.slides()
            app.state.accounts.register_slides((r.id, r.name) for r in refs)
        workers = _start_workers(app, inference) if inference is not None else []
        app.state.ready = True
        logger.info("serving %d slides", len(app.state.catalog.slides()))
        flusher = (
            asyncio.create_task(app.state.view_aggregator.flush_periodically())
            if share is not None
            else None
        )
        yield
        if flusher is not None:
            flusher.cancel()
        app.state.ready = False
        for worker in workers:
            worker.stop()
        recipient = getattr(app.state, "federation_recipient", None)
        for client in recipient.clients.values() if recipient is not None else ():
            client.close()  # peers' keep-alive connections (ResourceWarning otherwise)
        if share is not None:  # pending slide views into the audit trail, then close the DB
            app.state.view_aggregator.flush()
            app.state.accounts.db.dispose()

    # FastAPI's native OpenTelemetry check runs per request; nothing here exports telemetry
    off: Any = {"tracing": False, "metrics": False, "logs": False}
    app = FastAPI(title="IAIN", version="0.1.0", lifespan=lifespan, telemetry=off)
    root = open_data_root(settings.data, settings.s3_endpoint_url or None)
    cache_path = settings.cache_path
    disk = DiskCache(cache_path, settings.disk_cache_mb << 20) if cache_path else None
    app.state.settings = settings
    app.state.catalog = Catalog(root, settings.catalog_refresh_s)
    app.state.tiles = TileService(
        TileCache(MemoryCache(settings.memory_cache_mb << 20), disk), settings.jpeg_quality
    )
    app.state.slide_access = allow_all  # the accounts package replaces this hook
    # with accounts, tiles are per user: browsers may keep them, shared caches must not
    app.state.private_tiles = share is not None
    app.state.ready = False

    for cls, _ in ERROR_STATUS:
        app.add_exception_handler(cls, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)

    @app.get("/healthz", tags=["health"])
    def healthz(request: Request) -> Any:
        """200 once the data store has been scanned (liveness + readiness in one)."""
        if not request.app.state.ready:
            return error_response(503, "starting", "the slide catalogue is not loaded yet")
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    def readyz(request: Request) -> Any:
        """200 when the data store answers now (it is listed again)."""
        if not request.app.state.ready:
            return error_response(503, "starting", "the slide catalogue is not loaded yet")
        try:
            count = len(root.list_pyramids())
        except OSError as exc:
            logger.warning("data store not reachable: %s", type(exc).__name__)
            return error_response(503, "store_unreachable", "the data store does not answer")
        return {"status": "ok", "pyramids": count}

    app.include_router(tiling_router)
    app.include_router(overlay_router)
    if inference is not None:
        _install_inference(app, inference)
    install_pages(app, required=False)  # GET /, /view/{id}, /static/...
    install_rcp_pages(app)  # GET /rcp, /collections, /review
    # first middleware = innermost: authentication (install_share, below) wraps the fast
    # path, so the access hook sees the session on every tile
    app.add_middleware(TileFastPath)
    if share is not None:  # last: authentication must be the outermost middleware
        install_share(
            app,
            share,
            resolve=_share_resolve,
            not_found=PyramidNotFoundError,
            discover=_share_discover,
            source_of=lambda slide_id: _share_source(app, slide_id),
        )
        install_label_reviews(app)
        install_share_error_handlers(app)
    return app


def _install_inference(app: FastAPI, inference: InferenceSettings) -> None:
    """Jobs API on ``/inference``; jobs name slides by catalogue id, resolved to their store."""
    from inference.errors import HTTP_STATUS, InferenceError, StoreNotFoundError
    from inference.jobs import JobService
    from inference.router import router as inference_router

    def resolve(slide_id: str) -> Path:
        try:
            ref = app.state.catalog.get(slide_id)
        except PyramidNotFoundError as exc:
            raise StoreNotFoundError("no such slide") from exc
        if ref.store.local_root is None:
            raise StoreNotFoundError("inference needs a slide on a local store")
        return Path(ref.store.local_root)

    async def inference_error(request: Request, exc: Exception) -> JSONResponse:
        status = next((HTTP_STATUS[c] for c in type(exc).__mro__ if c in HTTP_STATUS), 500)
        return error_response(status, str(getattr(exc, "code", "inference_error")), str(exc))

    app.state.inference_jobs = JobService(inference.jobs_dir, resolve)
    app.add_exception_handler(InferenceError, inference_error)
    app.include_router(inference_router)


def _start_workers(app: FastAPI, inference: InferenceSettings) -> list[JobWorker]:
    from inference.jobs import JobWorker

    service = app.state.inference_jobs
    service.requeue_stale(inference.stale_after_s)
    workers = [
        JobWorker(service, device, inference.engine_options()) for device in inference.devices
    ]
    for worker in workers:
        worker.start()
    return workers


def create_app_from_env() -> FastAPI:
    """Factory for worker processes: settings come from ``IAIN_*`` variables; the jobs API
    is served when ``INFERENCE_JOBS_DIR`` is set."""
    import os

    share = None if os.environ.get("IAIN_AUTH", "1") == "0" else ShareSettings.from_env(os.environ)
    inference = None
    if os.environ.get("INFERENCE_JOBS_DIR"):
        from inference.config import InferenceSettings

        inference = InferenceSettings.from_env(os.environ)
    return create_app(ServerSettings.from_env(os.environ), share, inference)

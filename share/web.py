"""The HTTP edge shared by every route: session middleware, CSRF, and the slide access hook.

``AuthMiddleware`` (pure ASGI, so a cached tile check costs a dict lookup) turns the session
cookie into ``request.state.session`` or answers 401 (API, tiles) / 303 to ``/login`` (pages)
for every path except the public ones. State-changing methods must carry ``X-CSRF-Token`` equal
to the session's token. ``SlideAccess`` is the one callable the tile routes call
(``app.state.slide_access(request, slide_id)``): it asks ``authorize`` and raises the same
``SlideNotFoundError`` for an unknown slide and a forbidden one.
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from share import audit
from share.accounts import Accounts, SessionInfo
from share.authz import Action, Decision, Principal, SlideRef, authorize
from share.config import ShareSettings
from share.errors import (
    AuthenticationError,
    ConflictError,
    CsrfError,
    ForbiddenError,
    InvalidInputError,
    LoginRateLimitedError,
    NotFoundError,
    PayloadTooLargeError,
    SessionExpiredError,
    ShareError,
    SlideNotFoundError,
)

__all__ = [
    "CSRF_COOKIE",
    "CSRF_HEADER",
    "ERROR_STATUS",
    "SESSION_COOKIE",
    "AuthMiddleware",
    "SlideAccess",
    "cookies_of",
    "decision_only",
    "error_response",
    "flatten_routes",
    "install_error_handlers",
    "principal_of",
    "session_of",
]

logger = logging.getLogger(__name__)

SESSION_COOKIE = "iain_session"
CSRF_COOKIE = "iain_csrf"
CSRF_HEADER = "x-csrf-token"
T = TypeVar("T")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# class -> HTTP status; create_app merges this into its one table.
ERROR_STATUS: dict[type[ShareError], int] = {
    PayloadTooLargeError: 413,
    AuthenticationError: 401,
    LoginRateLimitedError: 429,
    CsrfError: 403,
    ForbiddenError: 403,
    SlideNotFoundError: 404,
    NotFoundError: 404,
    ConflictError: 409,
    InvalidInputError: 422,
}


def status_of(exc: ShareError) -> int:
    for cls in type(exc).__mro__:
        if cls in ERROR_STATUS:
            return ERROR_STATUS[cls]
    return 500


def error_response(exc: ShareError) -> JSONResponse:
    headers = {}
    if isinstance(exc, LoginRateLimitedError):
        headers["Retry-After"] = str(exc.retry_after_s)
    # Same shape as viewer.app's error bodies: {"error": code, "detail": message}.
    return JSONResponse(
        {"error": exc.code, "detail": str(exc)}, status_code=status_of(exc), headers=headers
    )


def install_error_handlers(app: FastAPI) -> None:
    """Map ShareError to its status (for apps that do not have create_app's table)."""

    async def handler(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ShareError)
        return error_response(exc)

    app.add_exception_handler(ShareError, handler)


def cookies_of(scope: Scope, names: tuple[str, ...]) -> dict[str, str]:
    """The values of the cookies named ``names``, in one pass over the raw headers.

    A plain split: http.cookies.SimpleCookie's regex parser cost more than the whole
    authorisation on the tile path. Our token values are URL-safe base64 (no quoting). Where a
    name comes twice (cookies of two paths), the first -- the most specific path -- wins."""
    prefixes = tuple(name + "=" for name in names)
    found: dict[str, str] = {}
    for key, value in scope.get("headers", ()):
        if key == b"cookie":
            for part in value.decode("latin-1").split(";"):
                part = part.strip()
                if part.startswith(prefixes):
                    name, _, text = part.partition("=")
                    found.setdefault(name, text.strip('"'))
    return found


def _cookie(scope: Scope, name: str) -> str | None:
    return cookies_of(scope, (name,)).get(name)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


class AuthMiddleware:
    """Authenticate every request that is not explicitly public (deny by default)."""

    def __init__(self, app: ASGIApp, accounts: Accounts, settings: ShareSettings) -> None:
        self.app = app
        self.accounts = accounts
        self.settings = settings

    def is_public(self, path: str) -> bool:
        return path in self.settings.public_paths or path.startswith(self.settings.public_prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self.is_public(scope["path"]):
            await self.app(scope, receive, send)
            return
        token = _cookie(scope, SESSION_COOKIE)
        if scope["type"] == "websocket":
            info_ws = None
            if token is not None:
                try:
                    info_ws = await run_in_threadpool(self.accounts.resolve_session, token)
                except AuthenticationError:
                    info_ws = None
            if info_ws is None:
                await send({"type": "websocket.close", "code": 4401})
                return
            scope.setdefault("state", {})["session"] = info_ws
            await self.app(scope, receive, send)
            return
        try:
            if token is None:
                raise AuthenticationError("log in first")
            info = self.accounts.cached_session(token)
            if info is None:
                info = await run_in_threadpool(self.accounts.resolve_session, token)
            if scope["method"] not in SAFE_METHODS:
                sent = _header(scope, CSRF_HEADER.encode()) or ""
                if not secrets.compare_digest(sent.encode(), info.csrf_token.encode()):
                    raise CsrfError(f"missing or wrong {CSRF_HEADER} header")
        except AuthenticationError as exc:
            await self._unauthenticated(scope, exc)(scope, receive, send)
            return
        except CsrfError as exc:
            await error_response(exc)(scope, receive, send)
            return
        scope.setdefault("state", {})["session"] = info
        await self.app(scope, receive, send)

    def _unauthenticated(self, scope: Scope, exc: AuthenticationError) -> Response:
        path: str = scope["path"]
        accept = _header(scope, b"accept") or ""
        is_page = (
            scope["method"] == "GET"
            and "text/html" in accept
            and not path.startswith(("/api/", "/slides/"))
        )
        if is_page:
            target = path + ("?" + scope["query_string"].decode() if scope["query_string"] else "")
            return Response(status_code=303, headers={"Location": f"/login?next={quote(target)}"})
        response = error_response(exc)
        if isinstance(exc, SessionExpiredError):
            response.delete_cookie(SESSION_COOKIE, path="/")
        return response


def flatten_routes(routes: Iterable[Any], prefix: str = "") -> list[tuple[str, frozenset[str]]]:
    """Every (path, methods) an app serves, through included routers and mounts (for tests and
    start-up checks that nothing escapes the middleware)."""
    out: list[tuple[str, frozenset[str]]] = []
    for route in routes:
        original = getattr(route, "original_router", None)  # FastAPI's included router
        if original is not None:
            inner = prefix + str(getattr(route.include_context, "prefix", ""))
            out += flatten_routes(original.routes, inner)
        elif isinstance(route, Mount):
            sub = getattr(route.app, "routes", None)
            if sub is not None:
                out += flatten_routes(sub, prefix + route.path)
            else:
                out.append((prefix + route.path + "/{path}", frozenset({"GET"})))
        elif isinstance(route, WebSocketRoute):
            out.append((prefix + route.path, frozenset({"WEBSOCKET"})))
        elif isinstance(route, Route):
            out.append((prefix + route.path, frozenset(route.methods or {"GET"})))
        else:
            raise TypeError(f"unknown route type {type(route).__name__} at {prefix}")
    return out


def session_of(request: Request) -> SessionInfo:
    """The request's session; the middleware guarantees it on non-public paths."""
    info = getattr(request.state, "session", None)
    if not isinstance(info, SessionInfo):
        raise AuthenticationError("log in first")
    return info


def principal_of(request: Request) -> Principal:
    return session_of(request).principal


# DeepZoom tile paths answered outside FastAPI routing (no path_params there).
_DZ_TILE = re.compile(
    r"/slides/(?P<slide_id>[^/]+)_files/(?P<level>\d+)/(?P<col>\d+)_(?P<row>\d+)\."
)


def _tile_index(request: Request, slide_id: str) -> tuple[str, int, int] | None:
    """(level key, col, row) of a tile request, or None; DeepZoom levels are keyed ``dzN``."""
    params = request.path_params
    try:
        if {"level", "col", "row"} <= params.keys() and params.get("slide_id") == slide_id:
            return str(int(params["level"])), int(params["col"]), int(params["row"])
        # scope["path"], not request.url: building the URL object costs ~25 us per tile
        path: str = request.scope.get("path", "")
        m = _DZ_TILE.fullmatch(path.rsplit(".", 1)[0] + ".")
        if m is not None and m["slide_id"] == slide_id:
            return f"dz{int(m['level'])}", int(m["col"]), int(m["row"])
    except (TypeError, ValueError):
        return None
    return None


def _names_slide(request: Request, slide_id: str) -> bool:
    # Listing routes ask about every slide; only a request that names the slide is an attempt.
    if (
        request.path_params.get("slide_id") == slide_id
        or request.query_params.get("slide_id") == slide_id
    ):
        return True
    return _tile_index(request, slide_id) is not None


def decision_only(_request: Request, _slide_id: str, decision: Decision) -> Decision:
    return decision


class SlideAccess(Generic[T]):
    """``app.state.slide_access(request, slide_id, action)``: the one check every slide route
    makes.

    Asks ``authorize``; on a denial or an unknown slide raises ``not_found(slide_id)`` (the
    same exception either way); otherwise returns ``resolve(request, slide_id, decision)`` --
    the tile server's slide handle (pseudonymised when the decision says so), or the
    Decision itself by default. Tile requests are aggregated into the audit trail; a denial
    of a request naming the slide is audited once per (session, slide, action) per minute.
    """

    def __init__(
        self,
        accounts: Accounts,
        views: audit.ViewAggregator,
        resolve: Callable[[Request, str, Decision], T],
        not_found: Callable[[str], Exception] = SlideNotFoundError,
        discover: Callable[[Request, str], str | None] | None = None,
    ) -> None:
        self.accounts = accounts
        self.discover = discover
        self.views = views
        self.resolve = resolve
        self.not_found = not_found
        self._denied: dict[tuple[str, str, str], float] = {}
        self._lock = threading.Lock()
        # Asked when authorize says no: a share may let a user of another centre view the slide.
        self.grant: Callable[[Principal, SlideRef, Action], Decision] | None = None

    def __call__(self, request: Request, slide_id: str, action: Action = Action.SLIDE_VIEW) -> T:
        info = session_of(request)
        slide = self.accounts.slide(slide_id)
        if slide is None and self.discover is not None:
            name = self.discover(request, slide_id)
            if name is not None:
                self.accounts.register_slides([(slide_id, name)])
                self.accounts.forget_slide(slide_id)
                slide = self.accounts.slide(slide_id)
        decision = (
            authorize(info.principal, action, slide)
            if slide is not None
            else Decision(False, "unknown slide")
        )
        if not decision and slide is not None and self.grant is not None:
            decision = self.grant(info.principal, slide, action)  # a share from another centre
        if not decision:
            if _names_slide(request, slide_id):
                self._audit_denial(info, slide_id, slide, action, decision)
            raise self.not_found(slide_id)
        assert slide is not None
        if action is Action.SLIDE_VIEW:
            index = _tile_index(request, slide_id)
            if index is not None:
                self.views.record(
                    info.session_id, info.principal.username, slide.centre, slide_id, *index
                )
        return self.resolve(request, slide_id, decision)

    def _audit_denial(
        self,
        info: SessionInfo,
        slide_id: str,
        slide: SlideRef | None,
        action: Action,
        decision: Decision,
    ) -> None:
        key = (info.session_id, slide_id, action.value)
        now = time.monotonic()
        with self._lock:
            if now - self._denied.get(key, -1e9) < 60:
                return
            if len(self._denied) > 10_000:
                self._denied.clear()
            self._denied[key] = now
        with self.accounts.db.session() as s:
            audit.append(
                s,
                actor=info.principal.username,
                action=action.value,
                outcome="denied",
                centre_id=slide.centre if slide is not None else None,
                slide_id=slide_id[:200],
                detail={"reason": decision.reason},
            )

"""Login, logout, me, visible slides and the audit export: ``/api/...``.

``install_share(app, settings)`` wires accounts into an app: database, middleware, the slide
access hook on ``app.state.slide_access`` and these routes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from share import annotations_router, audit, collections_router, opinions_router, review_router
from share.accounts import Accounts, SessionInfo
from share.authz import Action, AuditScope, Decision, Principal, authorize
from share.client_address import client_address
from share.collections_federation import install_collections_federation
from share.config import ShareSettings
from share.db import Database, open_database
from share.errors import ForbiddenError, NotFoundError, SlideNotFoundError
from share.federation_app import FEDERATION_PREFIX, install_federation
from share.oidc import OidcConfig, OidcLogin
from share.tile_grants import GRANT_PREFIX, TileGrants, install_tile_grants, load_secret
from share.web import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    AuthMiddleware,
    SlideAccess,
    decision_only,
    principal_of,
    session_of,
)

__all__ = ["install_share", "router"]

logger = logging.getLogger(__name__)

# /api/audit answers the newest records; the CLI export has no limit.
AUDIT_EXPORT_DEFAULT = 10_000
AUDIT_EXPORT_MAX = 100_000

router = APIRouter()


def _accounts(request: Request) -> Accounts:
    accounts: Accounts = request.app.state.accounts
    return accounts


AccountsDep = Annotated[Accounts, Depends(_accounts)]
SessionDep = Annotated[SessionInfo, Depends(session_of)]
PrincipalDep = Annotated[Principal, Depends(principal_of)]


class LoginBody(BaseModel):
    username: str = Field(min_length=1, max_length=150)
    password: str = Field(min_length=1, max_length=1024)


def _me(info: SessionInfo) -> dict[str, Any]:
    p = info.principal
    return {
        "username": p.username,
        "centre": p.centre,
        "role": p.role.value,
        "csrf_token": info.csrf_token,
    }


def _client_ip(request: Request) -> str:
    peer = request.client.host if request.client is not None else None
    trusted = _accounts(request).settings.trusted_networks
    return client_address(peer, request.headers.get("x-forwarded-for"), trusted)


@router.get("/login", response_class=HTMLResponse, include_in_schema=False)
def login_page() -> HTMLResponse:
    """Minimal login page (public); the viewer may replace it with its own."""
    html = resources.files("share").joinpath("templates/login.html").read_text("utf-8")
    return HTMLResponse(html)


@router.post("/api/login")
def login(body: LoginBody, request: Request, accounts: AccountsDep) -> JSONResponse:
    """Password login: sets the HttpOnly session cookie and a readable CSRF cookie."""
    ip = _client_ip(request)
    principal = accounts.authenticate(body.username, body.password, ip)
    token, info = accounts.create_session(principal, ip)
    response = JSONResponse(_me(info))
    _set_session_cookies(response, request, accounts, token, info)
    return response


def _set_session_cookies(
    response: Response, request: Request, accounts: Accounts, token: str, info: SessionInfo
) -> None:
    secure = accounts.settings.secure_cookies or request.url.scheme == "https"
    max_age = accounts.settings.session_absolute_s
    response.set_cookie(
        SESSION_COOKIE, token, max_age=max_age, httponly=True, samesite="lax", secure=secure
    )
    response.set_cookie(
        CSRF_COOKIE,
        info.csrf_token,
        max_age=max_age,
        httponly=False,
        samesite="strict",
        secure=secure,
    )


def _oidc(request: Request) -> OidcLogin:
    oidc: OidcLogin | None = request.app.state.oidc
    if oidc is None:
        raise NotFoundError("OIDC login is not configured on this server")
    return oidc


@router.get("/api/oidc/login", response_class=RedirectResponse, status_code=303)
def oidc_login(
    request: Request, next: Annotated[str, Query(max_length=500)] = "/"
) -> RedirectResponse:
    """Start an OIDC login (public): redirect to the identity provider."""
    return RedirectResponse(_oidc(request).start(next), status_code=303)


@router.get("/api/oidc/callback", response_class=RedirectResponse, status_code=303)
def oidc_callback(
    request: Request,
    accounts: AccountsDep,
    code: Annotated[str, Query(min_length=1, max_length=4096)],
    state: Annotated[str, Query(min_length=1, max_length=128)],
) -> RedirectResponse:
    """The provider sends the browser back here: open a session, go to ``next``."""
    token, info, next_url = _oidc(request).finish(code, state, _client_ip(request))
    response = RedirectResponse(next_url, status_code=303)
    _set_session_cookies(response, request, accounts, token, info)
    return response


@router.post("/api/logout")
def logout(request: Request, info: SessionDep, accounts: AccountsDep) -> JSONResponse:
    """Revoke the session server-side (every worker refuses it within the cache delay)."""
    request.app.state.view_aggregator.flush(info.session_id)
    accounts.revoke_session(info.session_id)
    with accounts.db.session() as s:
        audit.append(
            s, actor=info.principal.username, action="logout", centre_id=info.principal.centre
        )
    response = JSONResponse({"ok": True})
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")
    return response


@router.get("/api/me")
def me(info: SessionDep) -> dict[str, Any]:
    return _me(info)


@router.get("/api/slides")
def list_slides(principal: PrincipalDep, accounts: AccountsDep) -> list[dict[str, Any]]:
    """Slides the caller may view; names are withheld when the decision is pseudonymised."""
    out = []
    for ref, name in accounts.slides():
        decision = authorize(principal, Action.SLIDE_VIEW, ref)
        if decision:
            out.append(
                {
                    "slide_id": ref.slide_id,
                    "centre": ref.centre,
                    "name": None if decision.pseudonymised else name,
                }
            )
    return out


@router.get("/api/audit", response_model=None)
def audit_trail(
    request: Request,
    principal: PrincipalDep,
    accounts: AccountsDep,
    slide_id: Annotated[str | None, Query(max_length=200)] = None,
    format: Annotated[Literal["json", "csv"], Query()] = "json",
    limit: Annotated[int, Query(ge=1, le=AUDIT_EXPORT_MAX)] = AUDIT_EXPORT_DEFAULT,
) -> Response:
    """Audit records of the caller's centre (admins), optionally one slide; JSON or CSV.

    The newest ``limit`` records, oldest first; ``X-Audit-Truncated: true`` says older ones
    exist (the CLI ``iain audit export`` has no limit)."""
    if slide_id is not None:
        # Same 404 (and denial audit) as any slide route when unknown or not visible.
        request.app.state.slide_access(request, slide_id)
        ref = accounts.slide(slide_id)
        if ref is None:
            raise SlideNotFoundError(slide_id)
        centre = ref.centre
    else:
        centre = principal.centre
    decision = authorize(principal, Action.AUDIT_READ, AuditScope(centre, slide_id))
    if not decision:
        raise ForbiddenError(f"audit trail: {decision.reason}")
    request.app.state.view_aggregator.flush()
    rows = audit.records(accounts.db, centre_id=centre, slide_id=slide_id, limit=limit + 1)
    truncated = len(rows) > limit
    headers = {"X-Audit-Truncated": "true" if truncated else "false"}
    rows = rows[1:] if truncated else rows
    if format == "csv":
        headers["Content-Disposition"] = 'attachment; filename="audit.csv"'
        return Response(
            audit.export_csv(rows), media_type="text/csv; charset=utf-8", headers=headers
        )
    return JSONResponse(rows, headers=headers)


def install_share(
    app: FastAPI,
    settings: ShareSettings,
    db: Database | None = None,
    *,
    resolve: Callable[[Request, str, Decision], Any] | None = None,
    not_found: Callable[[str], Exception] = SlideNotFoundError,
    discover: Callable[[Request, str], str | None] | None = None,
    source_of: Callable[[str], Path | None] | None = None,
) -> Accounts:
    """Open the database (migrating it), add the auth middleware, hook and routes to ``app``.

    Call it after every other ``add_middleware`` so that authentication is the outermost layer
    (a tile fast path behind it still sees ``request.state.session``). ``resolve`` turns an
    allowed slide into what the tile routes expect from ``app.state.slide_access``;
    ``not_found`` builds the exception they map to 404; ``discover`` names a slide that
    exists on disk but is not registered yet (it is then registered to the default centre).
    ``source_of`` names a slide's local pyramid, from which shares to peers are derived.
    """
    if settings.federation_file:  # peers authenticate by node token, not by session
        settings = replace(settings, public_prefixes=(*settings.public_prefixes, FEDERATION_PREFIX))
    if settings.tile_grants:  # /tiles/ is authorised by the grant's signature, not the session
        settings = replace(settings, public_prefixes=(*settings.public_prefixes, GRANT_PREFIX))
    db = db or open_database(settings.url)
    accounts = Accounts(db, settings)
    accounts.ensure_centres()
    views = audit.ViewAggregator(db, settings.view_flush_s)
    app.state.accounts = accounts
    app.state.share_settings = settings
    app.state.view_aggregator = views
    app.state.oidc = (
        OidcLogin(
            accounts,
            OidcConfig(
                settings.oidc_issuer,
                settings.oidc_client_id,
                settings.oidc_client_secret,
                settings.oidc_redirect_uri,
            ),
        )
        if settings.oidc_issuer
        else None
    )
    app.state.slide_access = SlideAccess(
        accounts, views, resolve or decision_only, not_found, discover
    )
    app.add_middleware(AuthMiddleware, accounts=accounts, settings=settings)
    app.include_router(router)
    app.include_router(annotations_router.router)
    app.include_router(annotations_router.classes_router)
    opinions = opinions_router.install_opinions(app, accounts)
    collections_router.install_collections(app, accounts, opinions.shares, source_of)
    review_router.install_review(app, accounts, opinions.shares)
    if settings.tile_grants:
        grants = TileGrants(load_secret(settings.data_dir), settings.tile_grant_ttl_s)
        install_tile_grants(app, accounts, views, grants)
    if settings.federation_file:
        install_federation(app, accounts, opinions.shares, source_of, opinions)
        install_collections_federation(app, accounts)
    return accounts

"""Signed tile grants: short-lived cookies that let a static file server hand out stored tiles.

Why: authorising each tile in Python (session lookup, ``authorize``, view aggregation) costs
more than reading the tile. A grant is checked once, when the viewer asks for it; after that
each tile of the slide is authorised by a signature that nginx's ``secure_link`` module checks
at static-file speed (``iain nginx-conf`` writes that configuration), or that the tile fast
path checks without touching the database when IAIN answers itself.

A grant is two cookies scoped to ``/tiles/{slide_id}/``: the expiry (unix seconds) and
``base64url(md5(expiry + slide_id + session token + " " + secret))``, the exact expression
nginx evaluates. Binding the session cookie means a copied grant is useless without the
session. What a grant trades, said plainly: a revoked user keeps tile access until the grant
expires (``ttl_s``, default 120 s), and the audit trail records grants (one per refresh, with
the slide and session), not each tile nginx serves. Slides seen through a share from another
centre (pseudonymised decisions) never get grants: their tiles stay on the audited path.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import Scope

from share.accounts import Accounts
from share.audit import ViewAggregator
from share.authz import Action, authorize
from share.errors import SlideNotFoundError
from share.web import SESSION_COOKIE, cookies_of, session_of

__all__ = [
    "EXPIRES_COOKIE",
    "GRANT_PREFIX",
    "SIGNATURE_COOKIE",
    "TileGrants",
    "install_tile_grants",
    "load_secret",
]

GRANT_PREFIX = "/tiles/"
EXPIRES_COOKIE = "iain_tg_e"
SIGNATURE_COOKIE = "iain_tg_s"
SECRET_FILE = "tile-grants.key"


@dataclass(frozen=True)
class TileGrants:
    """Signs and checks grants; one per process, stateless (every worker shares the secret)."""

    secret: str
    ttl_s: int = 120

    def sign(self, expires: int, slide_id: str, session_token: str) -> str:
        """The signature nginx's ``secure_link_md5`` computes for the same values."""
        text = f"{expires}{slide_id}{session_token} {self.secret}".encode()
        digest = hashlib.md5(text, usedforsecurity=False).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def allows(self, scope: Scope, slide_id: str) -> bool:
        """Whether the request's cookies hold a live grant for ``slide_id`` (no database)."""
        cookies = cookies_of(scope, (EXPIRES_COOKIE, SIGNATURE_COOKIE, SESSION_COOKIE))
        expires = cookies.get(EXPIRES_COOKIE)
        signature = cookies.get(SIGNATURE_COOKIE)
        token = cookies.get(SESSION_COOKIE)
        if expires is None or signature is None or token is None:
            return False
        if not expires.isdigit() or len(expires) > 12 or int(expires) < time.time():
            return False
        expected = self.sign(int(expires), slide_id, token)
        return secrets.compare_digest(expected.encode(), signature.encode())


def load_secret(data_dir: Path) -> str:
    """The deployment's grant secret, created on first use (0600, URL-safe characters only,
    so it can sit inside an nginx configuration string)."""
    path = data_dir / SECRET_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another worker won the race: use its secret
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    return secret


def install_tile_grants(
    app: FastAPI, accounts: Accounts, views: ViewAggregator, grants: TileGrants
) -> None:
    """Serve ``GET /api/slides/{id}/tile-grant`` and let the tile fast path check grants."""
    router = APIRouter(tags=["tiles"])

    @router.get("/api/slides/{slide_id}/tile-grant")
    def tile_grant(request: Request, slide_id: str) -> JSONResponse:
        """A grant for the stored tiles of a slide of the caller's own access (not a share).

        Sets the two grant cookies (path ``/tiles/{id}/``) and says where the tiles are.
        """
        info = session_of(request)
        token = request.cookies.get(SESSION_COOKIE)
        slide = accounts.slide(slide_id)
        decision = (
            authorize(info.principal, Action.SLIDE_VIEW, slide) if slide is not None else None
        )
        if slide is None or token is None or not decision or decision.pseudonymised:
            raise SlideNotFoundError(slide_id)
        expires = int(time.time()) + grants.ttl_s
        signature = grants.sign(expires, slide_id, token)
        views.record_grant(info.session_id, info.principal.username, slide.centre, slide_id)
        response = JSONResponse(
            {"prefix": f"{GRANT_PREFIX}{slide_id}", "expires": expires, "ttl_s": grants.ttl_s}
        )
        response.headers["Cache-Control"] = "no-store"
        secure = accounts.settings.secure_cookies or request.url.scheme == "https"
        for name, value in ((EXPIRES_COOKIE, str(expires)), (SIGNATURE_COOKIE, signature)):
            response.set_cookie(
                name,
                value,
                max_age=grants.ttl_s,
                path=f"{GRANT_PREFIX}{slide_id}/",
                httponly=True,
                samesite="strict",
                secure=secure,
            )
        return response

    app.include_router(router)
    app.state.tile_grants = grants

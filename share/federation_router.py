"""HTTP edge of federation: what an owner node exposes to peers, and the recipient's proxy.

Owner side (``owner_router``), every route verifies the node signature, then re-checks the
share (no decision cached), then serves the DERIVED pyramid only::

    GET /federation/shares                                      shares for the signed user
    GET /federation/shares/{share_id}                           allow-listed slide info
    GET /federation/shares/{share_id}/tiles/{level}/{col}_{row}.jpeg   chunk bytes as stored
    POST /federation/revocations     (owner -> recipient) purge cached tiles of ended shares

Recipient side (``recipient_router``), for the recipient's own users (their session is the
app's ``current_caller`` dependency, which this module leaves to the accounts wiring)::

    GET /shared                                                 "shared with me", every peer
    GET /shared/{peer}                                          "shared with me" at that peer
    GET /shared/{peer}/{share_id}                               slide info
    GET /shared/{peer}/{share_id}/tiles/{level}/{col}_{row}.jpeg

Every share refusal is the same 404 as an unknown share (nothing to probe). The app maps
errors to statuses with :data:`ERROR_STATUS` through :func:`federation_error_handler`, answering
``{"error": code, "detail": message}`` like ``viewer.app``.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from PIL import Image

from share.deidentify import read_shared_pyramid_info, shared_tile_path
from share.federation import (
    FederationAccess,
    FederationConfig,
    Share,
    ShareRegistry,
    authorize_share,
)
from share.federation_errors import (
    FederationError,
    MalformedTokenError,
    PeerConflictError,
    PeerError,
    PeerInputError,
    PeerNotFoundError,
    PeerProtocolError,
    RequestAuthError,
    RevocationBodyError,
    ShareAccessError,
    SharedTileNotFoundError,
)
from share.peers import Caller, PeerClient, SharedSlide
from share.signing import ReplayCache, verify_request

__all__ = [
    "ERROR_STATUS",
    "CallerDep",
    "ClientDep",
    "OwnerState",
    "RecipientState",
    "current_caller",
    "federation_error_handler",
    "owner_router",
    "recipient_router",
    "shared_with_me_everywhere",
    "verified_claims",
]

logger = logging.getLogger(__name__)

# class -> HTTP status; the most specific class listed wins (checked in MRO order).
ERROR_STATUS: dict[type[FederationError], int] = {
    RequestAuthError: 401,
    RevocationBodyError: 422,
    ShareAccessError: 404,
    PeerNotFoundError: 404,
    PeerConflictError: 409,
    PeerInputError: 422,
    PeerError: 502,
    FederationError: 500,
}
_TILE_CACHE_CONTROL = "private, max-age=30"  # well inside the 60 s access-end promise


@dataclass
class OwnerState:
    """What the owner routes need; kept on ``app.state.federation_owner``."""

    config: FederationConfig
    shares: ShareRegistry
    pyramid_for: Callable[[Share], Path]  # where the share's derived pyramid is
    audit: Callable[[FederationAccess], None] | None = None
    replay_cache: ReplayCache = field(default_factory=ReplayCache)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))


@dataclass
class RecipientState:
    """The peers this node can ask, by name; kept on ``app.state.federation_recipient``."""

    clients: Mapping[str, PeerClient]


def federation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """Register with ``app.add_exception_handler(FederationError, ...)``."""
    status = 500
    for klass in type(exc).__mro__:
        if klass in ERROR_STATUS:
            status = ERROR_STATUS[klass]
            break
    code = getattr(exc, "code", "federation_error")
    if status == 404:
        return JSONResponse({"error": "not_found", "detail": "not found"}, status_code=404)
    if status >= 500:  # a peer learns that it failed, not how (no paths, no internals)
        logger.warning("federation request failed: %s", code)
        return JSONResponse({"error": code, "detail": "internal error"}, status_code=status)
    headers = {"WWW-Authenticate": 'Bearer realm="iain-federation"'} if status == 401 else None
    return JSONResponse({"error": code, "detail": str(exc)}, status_code=status, headers=headers)


def _owner(request: Request) -> OwnerState:
    state: OwnerState = request.app.state.federation_owner
    return state


def verified_claims(request: Request, body: bytes | None = None) -> dict[str, Any]:
    """The verified node token of this request (401 otherwise)."""
    state = _owner(request)
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise MalformedTokenError("missing 'Authorization: Bearer <node token>'")
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return verify_request(
        token.strip(),
        request.method,
        target,
        state.config.node,
        state.config.public_keys(),
        body=body,
        now=state.clock().timestamp(),
        replay_cache=state.replay_cache,
    )


OwnerDep = Annotated[OwnerState, Depends(_owner)]
ClaimsDep = Annotated[dict[str, Any], Depends(verified_claims)]

owner_router = APIRouter(prefix="/federation", tags=["federation"])


def _decide(
    state: OwnerState,
    claims: Mapping[str, Any],
    share_id: str,
    action: str,
    tile: tuple[int, int, int] | None = None,
) -> Share:
    now = state.clock()
    share = state.shares.get(share_id)
    try:
        authorize_share(share, claims, now)
    except ShareAccessError as exc:
        _audit(state, claims, share_id, share, action, tile, now, exc.code)
        raise
    assert share is not None  # authorize_share refuses None
    _audit(state, claims, share_id, share, action, tile, now, "")
    return share


def _audit(
    state: OwnerState,
    claims: Mapping[str, Any],
    share_id: str,
    share: Share | None,
    action: str,
    tile: tuple[int, int, int] | None,
    now: datetime,
    refused: str,
) -> None:
    access = FederationAccess(
        at=now,
        peer=str(claims.get("iss")),
        subject=str(claims.get("sub")),
        share_id=share_id,
        action=action,
        allowed=not refused,
        reason=refused,
        slide_id=share.slide_id if share else None,
        owner_centre=share.owner_centre if share else state.config.node,
        tile=tile,
    )
    if state.audit is not None:
        state.audit(access)
    logger.debug("federation %s by %s: %s", action, access.peer, refused or "ok")


@owner_router.get("/shares")
def list_shares(state: OwnerDep, claims: ClaimsDep) -> list[dict[str, Any]]:
    groups = claims.get("groups")
    found = state.shares.for_recipient(
        str(claims["iss"]), str(claims["sub"]), groups if isinstance(groups, list) else []
    )
    _audit(state, claims, "*", None, "list", None, state.clock(), "")
    return [
        {
            "share_id": share.share_id,
            "owner_centre": share.owner_centre,
            "pseudonym": share.pseudonym,
            "permission": share.permission.value,
            "expires_at": share.expires_at.isoformat(),
            "note": share.note,
        }
        for share in found
    ]


@owner_router.get("/shares/{share_id}")
def share_info(share_id: str, state: OwnerDep, claims: ClaimsDep) -> dict[str, Any]:
    share = _decide(state, claims, share_id, "info")
    return read_shared_pyramid_info(state.pyramid_for(share)).as_json()


@owner_router.get("/shares/{share_id}/tiles/{level}/{col}_{row}.jpeg")
def share_tile(
    share_id: str, level: int, col: int, row: int, state: OwnerDep, claims: ClaimsDep
) -> Response:
    share = _decide(state, claims, share_id, "tile", (level, col, row))
    root = state.pyramid_for(share)
    info = read_shared_pyramid_info(root)
    if not 0 <= level < info.level_count:
        raise SharedTileNotFoundError(f"level {level} not in 0..{info.level_count - 1}")
    columns, rows = info.grid(level)
    if not (0 <= col < columns and 0 <= row < rows):
        raise SharedTileNotFoundError(f"tile {col}_{row} outside {columns}x{rows}")
    try:
        data = shared_tile_path(root, level, col, row).read_bytes()
    except FileNotFoundError:
        data = _blank_tile(info.tile_width, info.tile_height)  # absent chunk = fill (white)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": _TILE_CACHE_CONTROL})


@owner_router.post("/revocations")
async def revocations(request: Request) -> dict[str, int]:
    """An owner node tells us (the recipient) its shares ended: purge what we cached of them.

    Signed by the owner and bound to this body; a node can purge only its own shares' tiles.
    """
    body = await request.body()
    if len(body) > 1_000_000:
        raise MalformedTokenError("revocation body too large")
    claims = await run_in_threadpool(verified_claims, request, body)
    try:
        share_ids = json.loads(body)["share_ids"]
    except (ValueError, KeyError, TypeError) as exc:
        raise RevocationBodyError('body must be {"share_ids": [...]}') from exc
    if not isinstance(share_ids, list) or not all(isinstance(i, str) for i in share_ids):
        raise RevocationBodyError("share_ids must be a list of strings")
    state: RecipientState = request.app.state.federation_recipient
    client = state.clients.get(str(claims["iss"]))
    purged = sum(client.purge(share_id) for share_id in share_ids) if client else 0
    logger.info(
        "peer %s revoked %d shares; %d cached tiles purged", claims["iss"], len(share_ids), purged
    )
    return {"purged": purged}


@cache
def _blank_tile(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (255, 255, 255)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


# ---------------------------------------------------------------- recipient side


def current_caller() -> Caller:
    """Replaced by the app's session dependency (``app.dependency_overrides``); deny by default."""
    raise RequestAuthError("no session")


def _client(request: Request, peer: str) -> PeerClient:
    state: RecipientState = request.app.state.federation_recipient
    client = state.clients.get(peer)
    if client is None:
        raise PeerNotFoundError("no such peer")
    return client


CallerDep = Annotated[Caller, Depends(current_caller)]
ClientDep = Annotated[PeerClient, Depends(_client)]

recipient_router = APIRouter(prefix="/shared", tags=["federation"])


def _recipient(request: Request) -> RecipientState:
    state: RecipientState = request.app.state.federation_recipient
    return state


def _slide_json(peer: str, slide: SharedSlide) -> dict[str, Any]:
    return {
        "peer": peer,
        "share_id": slide.share_id,
        "owner_centre": slide.owner_centre,
        "pseudonym": slide.pseudonym,
        "permission": slide.permission.value,
        "expires_at": slide.expires_at.isoformat(),
        "note": slide.note,
    }


@recipient_router.get("")
def shared_with_me_everywhere(
    state: Annotated[RecipientState, Depends(_recipient)], caller: CallerDep
) -> dict[str, Any]:
    """ "Shared with me" across every peer, asked in parallel; a peer that fails is named."""
    clients = list(state.clients.values())
    if not clients:
        return {"slides": [], "unavailable": []}

    def ask(client: PeerClient) -> list[SharedSlide] | PeerError:
        try:
            return client.list_shared(caller)
        except PeerError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=min(8, len(clients))) as pool:
        answers = list(pool.map(ask, clients))
    slides: list[dict[str, Any]] = []
    unavailable: list[dict[str, str]] = []
    for client, answer in zip(clients, answers, strict=True):
        if isinstance(answer, PeerError):
            unavailable.append({"peer": client.peer_name, "error": answer.code})
        else:
            slides += [_slide_json(client.peer_name, slide) for slide in answer]
    return {"slides": slides, "unavailable": unavailable}


@recipient_router.get("/{peer}")
def shared_with_me(client: ClientDep, caller: CallerDep) -> list[dict[str, Any]]:
    return [_slide_json(client.peer_name, slide) for slide in client.list_shared(caller)]


@recipient_router.get("/{peer}/{share_id}")
def shared_info(share_id: str, client: ClientDep, caller: CallerDep) -> dict[str, Any]:
    return client.slide_info(share_id, caller).as_json()


@recipient_router.get("/{peer}/{share_id}/tiles/{level}/{col}_{row}.jpeg")
def shared_tile(
    share_id: str, level: int, col: int, row: int, client: ClientDep, caller: CallerDep
) -> Response:
    data = client.read_tile(share_id, level, col, row, caller)
    if not data.startswith(b"\xff\xd8"):
        raise PeerProtocolError("peer tile is not a JPEG")
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, no-store"})

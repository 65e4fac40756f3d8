"""Owner-side share management: ``/api/shares`` (create, list, revoke).

::

    POST /api/shares                   share one of my centre's slides with a user / group
    GET  /api/shares                   mine (admins: the whole centre's)
    POST /api/shares/{share_id}/revoke the creator or the centre's admin; access ends at once

Only clinicians who may see the slide un-pseudonymised may share it; the recipient is always
at another centre. Unknown and foreign shares are the same 404.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from share.accounts import Accounts
from share.authz import Action, Principal, Role, authorize
from share.deidentify import SharedRegion
from share.errors import ForbiddenError, InvalidInputError, NotFoundError, SlideNotFoundError
from share.federation import Permission, Recipient, RecipientKind, Share
from share.federation_errors import InvalidRegionError
from share.shares import DbShareRegistry, NewShare
from share.web import principal_of

__all__ = ["router"]

router = APIRouter(prefix="/api/shares", tags=["shares"])

PrincipalDep = Annotated[Principal, Depends(principal_of)]


def _registry(request: Request) -> DbShareRegistry:
    registry: DbShareRegistry = request.app.state.share_registry
    return registry


RegistryDep = Annotated[DbShareRegistry, Depends(_registry)]


class RecipientBody(BaseModel):
    kind: RecipientKind
    centre: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=150)


class ShareBody(BaseModel):
    slide_id: str = Field(min_length=1, max_length=200)
    recipient: RecipientBody
    permission: Permission = Permission.VIEW
    expires_at: datetime
    note: str = Field(default="", max_length=2000)
    region: list[int] | None = Field(default=None, min_length=4, max_length=4)


def _json(share: Share) -> dict[str, Any]:
    data = share.to_json()
    data.pop("owner_centre")
    return data


@router.post("", status_code=201)
def create_share(
    body: ShareBody, request: Request, who: PrincipalDep, registry: RegistryDep
) -> dict[str, Any]:
    accounts: Accounts = request.app.state.accounts
    slide = accounts.slide(body.slide_id)
    decision = authorize(who, Action.SLIDE_VIEW, slide) if slide is not None else None
    if slide is None or not decision or slide.centre != who.centre:
        raise SlideNotFoundError(body.slide_id)
    if decision.pseudonymised:
        raise ForbiddenError("only clinicians share slides")
    try:
        region = SharedRegion(*body.region) if body.region else None
    except InvalidRegionError as exc:
        raise InvalidInputError(str(exc)) from exc
    expires = body.expires_at if body.expires_at.tzinfo else body.expires_at.replace(tzinfo=UTC)
    new = NewShare(
        slide_id=body.slide_id,
        recipient=Recipient(body.recipient.kind, body.recipient.centre, body.recipient.name),
        permission=body.permission,
        expires_at=expires,
        note=body.note,
        region=region,
    )
    return _json(registry.create(who, new))


@router.get("")
def list_shares(who: PrincipalDep, registry: RegistryDep) -> list[dict[str, Any]]:
    if who.role not in (Role.PATHOLOGIST, Role.ADMIN):
        raise ForbiddenError("shares are managed by clinicians")
    mine = None if who.role is Role.ADMIN else who.username
    return [_json(share) for share in registry.owned_by(who.centre, mine)]


@router.post("/{share_id}/revoke")
def revoke_share(share_id: str, who: PrincipalDep, registry: RegistryDep) -> dict[str, Any]:
    share = registry.get(share_id)
    if share is None or share.owner_centre != who.centre:
        raise NotFoundError("share not found")
    is_admin = who.role is Role.ADMIN
    if not is_admin and registry.creator(share_id) != who.username:
        raise ForbiddenError("only its creator or the centre's admin revokes a share")
    return _json(registry.revoke(who.username, share_id))

"""HTTP edge of teaching collections: ``/api/collections``.

::

    POST /api/collections                  create (a clinician, own centre's slides) -> 201
    GET  /api/collections                  the ones I may read (mine, and those shown to me)
    GET  /api/collections/{id}             one collection (de-identified for other centres)
    POST /api/collections/{id}/revoke      end it and its shares (creator or centre admin)

An unknown collection and one not shown to the caller's centre are the same 404.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path as FsPath
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Path, Request
from pydantic import BaseModel, Field

from share.accounts import Accounts
from share.authz import Principal
from share.collections import CollectionDraft, CollectionItem, Collections, PinnedRegion
from share.shares import DbShareRegistry
from share.web import principal_of

__all__ = ["install_collections", "router"]

BIGINT_MAX = 2**63 - 1
Pixel = 2**31 - 1  # level-0 pixels, far beyond any slide
CollectionId = Annotated[int, Path(ge=1, le=BIGINT_MAX)]

router = APIRouter(prefix="/api/collections", tags=["collections"])

PrincipalDep = Annotated[Principal, Depends(principal_of)]


def _collections(request: Request) -> Collections:
    collections: Collections = request.app.state.collections
    return collections


CollectionsDep = Annotated[Collections, Depends(_collections)]


class RegionBody(BaseModel):
    x: int = Field(ge=0, le=Pixel)
    y: int = Field(ge=0, le=Pixel)
    w: int = Field(gt=0, le=Pixel)
    h: int = Field(gt=0, le=Pixel)
    caption: str = Field(default="", max_length=2000)


class ItemBody(BaseModel):
    slide_id: str = Field(min_length=1, max_length=200)
    note: str = Field(default="", max_length=10_000)
    regions: list[RegionBody] = Field(default_factory=list, max_length=100)


class CollectionBody(BaseModel):
    title: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=20_000)
    audience: list[str] = Field(default_factory=list, max_length=32)
    items: list[ItemBody] = Field(min_length=1, max_length=50)
    expires_at: datetime | None = None


@router.post("", status_code=201)
def create_collection(
    body: CollectionBody, who: PrincipalDep, collections: CollectionsDep
) -> dict[str, Any]:
    expires = body.expires_at
    if expires is not None and expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    draft = CollectionDraft(
        title=body.title,
        description=body.description,
        audience=body.audience,
        expires_at=expires,
        items=[
            CollectionItem(
                i.slide_id,
                i.note,
                [PinnedRegion(r.x, r.y, r.w, r.h, r.caption) for r in i.regions],
            )
            for i in body.items
        ],
    )
    return collections.create(who, draft)


@router.get("")
def list_collections(who: PrincipalDep, collections: CollectionsDep) -> list[dict[str, Any]]:
    return collections.visible(who)


@router.get("/{collection_id}")
def get_collection(
    collection_id: CollectionId, who: PrincipalDep, collections: CollectionsDep
) -> dict[str, Any]:
    return collections.get(who, collection_id)


@router.post("/{collection_id}/revoke")
def revoke_collection(
    collection_id: CollectionId, who: PrincipalDep, collections: CollectionsDep
) -> dict[str, Any]:
    return collections.revoke(who, collection_id)


def install_collections(
    app: FastAPI,
    accounts: Accounts,
    shares: DbShareRegistry,
    source_of: Callable[[str], FsPath | None] | None = None,
) -> Collections:
    """Put the service on ``app.state.collections`` and add the routes."""
    collections = Collections(accounts, shares, source_of)
    app.state.collections = collections
    app.include_router(router)
    return collections

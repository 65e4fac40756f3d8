"""Teaching collections: a curated, de-identified slide set with pinned regions and captions.

A pathologist or admin picks slides of their own centre, pins regions (level-0 pixels, each with
a caption) and names the centres that may see the set. Nothing new lets pixels out: each
(slide, audience centre) becomes an ordinary share to that centre's pool
(:class:`~share.shares.DbShareRegistry`, so the derived, de-identified pyramid, the peer API,
revocation and the owner's audit trail all apply), and what a reader of another centre is told
about a slide is exactly :meth:`SharedPyramidInfo.as_json` plus the curator's own words.

Every read of a collection is an audit record ``collection.read`` of the owner centre; creation
and revocation are ``collection.create`` / ``collection.revoke``; tile views are audited by the
share machinery (local views by the view aggregator, peers by the federation trail).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from share import audit
from share.accounts import Accounts
from share.authz import Action, CollectionRef, Decision, Principal, authorize
from share.collection_models import CollectionItemRow, CollectionRow
from share.deidentify import SharedPyramidInfo, describe_shared
from share.errors import ForbiddenError, InvalidInputError, NotFoundError
from share.federation import Permission, Recipient, RecipientKind, new_pseudonym
from share.federation_errors import FederationError
from share.shares import POOL_GROUP, DbShareRegistry, NewShare

__all__ = [
    "DEFAULT_LIFETIME",
    "CollectionDraft",
    "CollectionItem",
    "Collections",
    "PinnedRegion",
]

logger = logging.getLogger(__name__)

DEFAULT_LIFETIME = timedelta(days=365)  # a teaching set outlives a case; revocable at any time
MAX_ITEMS = 50
MAX_REGIONS = 100


@dataclass(frozen=True, slots=True)
class PinnedRegion:
    """A rectangle of the slide in level-0 pixels: top-left (x, y), size (w, h), a caption."""

    x: int
    y: int
    w: int
    h: int
    caption: str = ""

    def __post_init__(self) -> None:
        if self.x < 0 or self.y < 0 or self.w <= 0 or self.h <= 0:
            raise InvalidInputError(f"region ({self.x}, {self.y}, {self.w}, {self.h}) is empty")


@dataclass(frozen=True, slots=True)
class CollectionItem:
    slide_id: str
    note: str = ""
    regions: Sequence[PinnedRegion] = ()


@dataclass(frozen=True, slots=True)
class CollectionDraft:
    title: str
    items: Sequence[CollectionItem]
    audience: Sequence[str] = ()  # other centres; the owner centre always sees its own
    description: str = ""
    expires_at: datetime | None = None  # None: DEFAULT_LIFETIME from now


def _live_rows(s: Session) -> list[CollectionRow]:
    """The newest 1000 collections neither revoked nor expired."""
    now = datetime.now(UTC)
    rows = s.scalars(
        select(CollectionRow)
        .where(CollectionRow.revoked_at.is_(None))
        .order_by(CollectionRow.id.desc())
        .limit(1000)
    ).all()
    return [row for row in rows if _aware(row.expires_at) > now]


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _ref(row: CollectionRow) -> CollectionRef:
    return CollectionRef(row.owner_centre, row.created_by, frozenset(json.loads(row.audience)))


class Collections:
    """Create, list, read and revoke teaching collections (the service behind the router).

    ``source_of(slide_id)`` is the slide's local pyramid, read for the allow-listed facts
    (size, tile size, mpp) a reader of another centre is told; None where unknown.
    """

    def __init__(
        self,
        accounts: Accounts,
        shares: DbShareRegistry,
        source_of: Callable[[str], Path | None] | None = None,
    ) -> None:
        self.accounts = accounts
        self.shares = shares
        self.source_of = source_of

    # ---------------------------------------------------------------- write

    def create(self, who: Principal, draft: CollectionDraft) -> dict[str, Any]:
        audience = sorted(set(draft.audience))
        decision = authorize(who, Action.COLLECTION_CREATE, CollectionRef(who.centre))
        if not decision:
            raise ForbiddenError(f"collection: {decision.reason}")
        centres = set(self.accounts.settings.centres)
        for centre in audience:
            if centre == who.centre:
                raise InvalidInputError("the audience is other centres (yours always sees it)")
            if centre not in centres:
                raise InvalidInputError(f"unknown centre {centre!r}")
        if not 1 <= len(draft.items) <= MAX_ITEMS:
            raise InvalidInputError(f"a collection holds 1..{MAX_ITEMS} slides")
        seen: set[str] = set()
        for item in draft.items:
            slide = self.accounts.slide(item.slide_id)
            view = authorize(who, Action.SLIDE_VIEW, slide) if slide is not None else None
            if slide is None or not view or view.pseudonymised or slide.centre != who.centre:
                raise InvalidInputError(f"slide {item.slide_id!r} is not one of your centre's")
            if item.slide_id in seen:
                raise InvalidInputError(f"slide {item.slide_id!r} is listed twice")
            if len(item.regions) > MAX_REGIONS:
                raise InvalidInputError(f"at most {MAX_REGIONS} regions per slide")
            seen.add(item.slide_id)
        now = datetime.now(UTC)
        expires = _aware(draft.expires_at) if draft.expires_at else now + DEFAULT_LIFETIME
        if expires <= now:
            raise InvalidInputError("expiry is in the past")
        pseudonyms = [new_pseudonym() for _ in draft.items]
        for item, pseudonym in zip(draft.items, pseudonyms, strict=True):
            self._check_regions(item, pseudonym)
        # Shares first (each is audited as share.create); if anything then fails, they are
        # revoked again, so no share outlives a collection that was never made.
        item_shares: list[dict[str, str]] = []
        try:
            for item, pseudonym in zip(draft.items, pseudonyms, strict=True):
                made: dict[str, str] = {}
                item_shares.append(made)
                for centre in audience:
                    share = self.shares.create(
                        who,
                        NewShare(
                            slide_id=item.slide_id,
                            recipient=Recipient(RecipientKind.GROUP, centre, POOL_GROUP),
                            permission=Permission.VIEW,
                            expires_at=expires,
                            note=f"teaching collection: {draft.title}"[:2000],
                            pseudonym=pseudonym,
                        ),
                    )
                    made[centre] = share.share_id
            collection_id = self._insert(
                who, draft, audience, pseudonyms, item_shares, now, expires
            )
        except Exception:
            for made in item_shares:
                for share_id in made.values():
                    self.shares.revoke(who.username, share_id)
            raise
        logger.info("collection %d created for %d centres", collection_id, len(audience))
        return self.get(who, collection_id, audited=False)

    def _insert(
        self,
        who: Principal,
        draft: CollectionDraft,
        audience: list[str],
        pseudonyms: list[str],
        item_shares: list[dict[str, str]],
        now: datetime,
        expires: datetime,
    ) -> int:
        with self.accounts.db.session() as s:
            row = CollectionRow(
                owner_centre=who.centre,
                created_by=who.username,
                title=draft.title,
                description=draft.description,
                audience=json.dumps(audience),
                created_at=now,
                expires_at=expires,
                revoked_at=None,
            )
            s.add(row)
            s.flush()
            for position, (item, pseudonym, made) in enumerate(
                zip(draft.items, pseudonyms, item_shares, strict=True)
            ):
                s.add(
                    CollectionItemRow(
                        collection_id=row.id,
                        position=position,
                        slide_id=item.slide_id,
                        pseudonym=pseudonym,
                        note=item.note,
                        regions=json.dumps([_region_json(r) for r in item.regions]),
                        shares=json.dumps(made),
                    )
                )
            audit.append(
                s,
                actor=who.username,
                action="collection.create",
                centre_id=who.centre,
                detail={"collection": row.id, "audience": audience, "slides": len(draft.items)},
            )
            return row.id

    def _check_regions(self, item: CollectionItem, pseudonym: str) -> None:
        info = self._info(item.slide_id, pseudonym)
        if info is None:
            return
        for r in item.regions:
            if r.x + r.w > info.width or r.y + r.h > info.height:
                raise InvalidInputError(
                    f"region ({r.x}, {r.y}, {r.w}, {r.h}) outside the slide "
                    f"({info.width}x{info.height})"
                )

    def revoke(self, who: Principal, collection_id: int) -> dict[str, Any]:
        """End the collection and every share it made (access ends at the next request)."""
        with self.accounts.db.session() as s:
            row = self._visible(s, who, collection_id)
            decision = authorize(who, Action.COLLECTION_MANAGE, _ref(row))
            if not decision:
                raise ForbiddenError(f"collection: {decision.reason}")
            items = list(
                s.scalars(
                    select(CollectionItemRow).where(CollectionItemRow.collection_id == row.id)
                )
            )
            share_ids = [sid for item in items for sid in json.loads(item.shares).values()]
            if row.revoked_at is None:
                row.revoked_at = datetime.now(UTC)
                audit.append(
                    s,
                    actor=who.username,
                    action="collection.revoke",
                    centre_id=row.owner_centre,
                    detail={"collection": row.id, "shares": len(share_ids)},
                )
        for share_id in share_ids:
            self.shares.revoke(who.username, share_id)
        return self.get(who, collection_id, audited=False)

    # ---------------------------------------------------------------- read

    def visible(self, who: Principal) -> list[dict[str, Any]]:
        """Live collections the caller may read (their centre's, and those shown to it)."""
        out = []
        with self.accounts.db.session() as s:
            rows = _live_rows(s)
            per = dict(
                s.execute(
                    select(CollectionItemRow.collection_id, func.count()).group_by(
                        CollectionItemRow.collection_id
                    )
                ).all()
            )
            for row in rows:
                if not authorize(who, Action.COLLECTION_READ, _ref(row)):
                    continue
                out.append({**self._head(row), "slides": per.get(row.id, 0)})
        return out

    def get(self, who: Principal, collection_id: int, *, audited: bool = True) -> dict[str, Any]:
        """One collection as the caller may see it; readers of other centres get the
        de-identified form (pseudonyms, allow-listed facts, captions). Audited at the owner."""
        with self.accounts.db.session() as s:
            row = self._visible(s, who, collection_id)
            decision = authorize(who, Action.COLLECTION_READ, _ref(row))
            items = list(
                s.scalars(
                    select(CollectionItemRow)
                    .where(CollectionItemRow.collection_id == row.id)
                    .order_by(CollectionItemRow.position)
                )
            )
            if audited:
                audit.append(
                    s,
                    actor=who.username,
                    action="collection.read",
                    centre_id=row.owner_centre,
                    detail={"collection": row.id, "reader_centre": who.centre},
                )
            head = self._head(row)
        head["items"] = [self._item(item, who, decision) for item in items]
        head["revoked"] = row.revoked_at is not None
        return head

    def for_peer(self, centre: str, user: str, groups: Sequence[str]) -> list[dict[str, Any]]:
        """What a peer node's user (``user`` at node ``centre``) may read: live collections shown
        to ``centre``, de-identified, each item naming the share that serves its pixels.

        Every collection returned is a ``collection.read`` record here, at the owner."""
        if POOL_GROUP not in groups:
            return []  # collection shares go to a centre's pool: nothing for non-clinicians
        out = []
        with self.accounts.db.session() as s:
            for row in _live_rows(s):
                if centre not in json.loads(row.audience):
                    continue
                items = s.scalars(
                    select(CollectionItemRow)
                    .where(CollectionItemRow.collection_id == row.id)
                    .order_by(CollectionItemRow.position)
                ).all()
                audit.append(
                    s,
                    actor=f"{user}@{centre}"[:150],
                    action="collection.read",
                    centre_id=row.owner_centre,
                    detail={"collection": row.id, "reader_centre": centre, "peer": centre},
                )
                head = self._head(row)
                del head["audience"]  # which other centres got it is the owner's business
                head["items"] = [
                    {
                        **self._public_item(item),
                        "share_id": json.loads(item.shares).get(centre),
                    }
                    for item in items
                ]
                out.append(head)
        return out

    def _visible(self, s: Session, who: Principal, collection_id: int) -> CollectionRow:
        """The row, or the same 404 for an unknown, expired-and-foreign or unshared one."""
        row = s.get(CollectionRow, collection_id)
        if row is None or not authorize(who, Action.COLLECTION_READ, _ref(row)):
            raise NotFoundError(f"collection {collection_id} not found")
        foreign = row.owner_centre != who.centre
        ended = row.revoked_at is not None or _aware(row.expires_at) <= datetime.now(UTC)
        if foreign and ended:
            raise NotFoundError(f"collection {collection_id} not found")
        return row

    @staticmethod
    def _head(row: CollectionRow) -> dict[str, Any]:
        return {
            "id": row.id,
            "title": row.title,
            "description": row.description,
            "owner_centre": row.owner_centre,
            "audience": json.loads(row.audience),
            "created_at": _aware(row.created_at).isoformat(),
            "expires_at": _aware(row.expires_at).isoformat(),
        }

    def _info(self, slide_id: str, pseudonym: str) -> SharedPyramidInfo | None:
        source = self.source_of(slide_id) if self.source_of is not None else None
        if source is None:
            return None
        try:
            return describe_shared(source, pseudonym=pseudonym)
        except (FederationError, OSError) as exc:
            logger.warning("collection slide %s not described: %s", pseudonym, type(exc).__name__)
            return None

    def _public_item(self, item: CollectionItemRow) -> dict[str, Any]:
        """An item as anyone allowed to read the collection may see it (no slide id)."""
        info = self._info(item.slide_id, item.pseudonym)
        mpp_x = info.mpp_x if info is not None else None
        mpp_y = info.mpp_y if info is not None else None
        regions = []
        for r in json.loads(item.regions):
            region: dict[str, Any] = dict(r)
            if mpp_x is not None and mpp_y is not None:
                region["um"] = {
                    "x": r["x"] * mpp_x,
                    "y": r["y"] * mpp_y,
                    "w": r["w"] * mpp_x,
                    "h": r["h"] * mpp_y,
                }
            regions.append(region)
        return {
            "pseudonym": item.pseudonym,
            "note": item.note,
            "regions": regions,
            "info": info.as_json() if info is not None else None,
        }

    def _item(self, item: CollectionItemRow, who: Principal, decision: Decision) -> dict[str, Any]:
        out = self._public_item(item)
        shares: dict[str, str] = json.loads(item.shares)
        if decision.pseudonymised:
            # A reader of another centre on this node: the share to their centre grants the
            # tiles (pseudonymised, audited at the owner); nothing but the opaque id names it.
            out["share_id"] = shares.get(who.centre)
            out["dzi"] = f"/slides/{item.slide_id}.dzi"
        else:
            out["slide_id"] = item.slide_id
            out["dzi"] = f"/slides/{item.slide_id}.dzi"
            out["shares"] = shares
        return out


def _region_json(r: PinnedRegion) -> dict[str, Any]:
    return {"x": r.x, "y": r.y, "w": r.w, "h": r.h, "caption": r.caption}

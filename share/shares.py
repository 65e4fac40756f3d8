"""Shares kept in the database: the owner node's ``ShareRegistry`` (replaces ``JsonShareFile``).

One row per (slide, recipient) share; ``authorize_share`` still decides every peer request, so
revocation and expiry act at the next request. ``local_grant`` answers the same question for a
node hosting several centres: may this logged-in user of centre B view centre A's slide?
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select

from share import audit
from share.authz import Action, Decision, Principal, Role, SlideRef
from share.db import Database
from share.deidentify import SharedRegion
from share.errors import InvalidInputError, NotFoundError
from share.federation import (
    Permission,
    Recipient,
    RecipientKind,
    Share,
    authorize_share,
    new_pseudonym,
    new_share_id,
)
from share.federation_errors import ShareAccessError
from share.opinion_models import ShareRow

__all__ = ["POOL_GROUP", "DbShareRegistry", "NewShare"]

logger = logging.getLogger(__name__)

POOL_GROUP = "pool"  # the group every clinician of a centre is in: "the centre's pool"


@dataclass(frozen=True, slots=True)
class NewShare:
    """What the owner decides when sharing one slide."""

    slide_id: str
    recipient: Recipient
    permission: Permission
    expires_at: datetime
    note: str = ""
    region: SharedRegion | None = None
    pseudonym: str | None = None  # None: a fresh one


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything stored is UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _to_share(row: ShareRow) -> Share:
    region = SharedRegion(*json.loads(row.region)) if row.region else None
    return Share(
        share_id=row.share_id,
        owner_centre=row.owner_centre,
        slide_id=row.slide_id,
        recipient=Recipient(
            RecipientKind(row.recipient_kind), row.recipient_centre, row.recipient_name
        ),
        permission=Permission(row.permission),
        expires_at=_aware(row.expires_at),
        pseudonym=row.pseudonym,
        note=row.note,
        revoked_at=_aware(row.revoked_at) if row.revoked_at else None,
        created_at=_aware(row.created_at),
        region=region,
    )


def groups_of(principal: Principal) -> list[str]:
    """The share groups a local user is in (clinicians form their centre's pool)."""
    return [POOL_GROUP] if principal.role in (Role.PATHOLOGIST, Role.ADMIN) else []


class DbShareRegistry:
    """``ShareRegistry`` over the ``shares`` table, plus create / revoke / list for the owner."""

    def __init__(self, db: Database) -> None:
        self.db = db
        # Called after a revocation commits (federation: tell the recipient node to purge).
        self.on_revoke: Callable[[Share], None] | None = None
        # Called after a share commits (federation: derive its de-identified pyramid).
        self.on_create: Callable[[Share], None] | None = None

    def get(self, share_id: str) -> Share | None:
        with self.db.session() as s:
            row = s.get(ShareRow, share_id)
            return _to_share(row) if row is not None else None

    def for_recipient(self, centre: str, user: str, groups: Sequence[str]) -> list[Share]:
        """Live shares for ``user`` (or one of ``groups``) at ``centre``."""
        names = [user, *groups]
        with self.db.session() as s:
            rows = s.scalars(
                select(ShareRow).where(
                    ShareRow.recipient_centre == centre,
                    ShareRow.recipient_name.in_(names),
                    ShareRow.revoked_at.is_(None),
                )
            ).all()
            shares = [_to_share(row) for row in rows]
        claims = {"iss": centre, "sub": user, "groups": list(groups)}
        now = datetime.now(UTC)
        found = []
        for share in shares:
            try:
                found.append(authorize_share(share, claims, now))
            except ShareAccessError:  # expired, or a user share of the same name in a group
                continue
        return found

    def create(self, owner: Principal, new: NewShare, *, opinion_id: int | None = None) -> Share:
        """Share one of the owner's centre's slides (audited in the owner's trail)."""
        if new.recipient.centre == owner.centre:
            raise InvalidInputError("a share goes to another centre")
        if new.expires_at.tzinfo is None:
            raise InvalidInputError("expiry must carry a timezone")
        now = datetime.now(UTC)
        if new.expires_at <= now:
            raise InvalidInputError("expiry is in the past")
        row = ShareRow(
            share_id=new_share_id(),
            owner_centre=owner.centre,
            slide_id=new.slide_id,
            recipient_kind=new.recipient.kind.value,
            recipient_centre=new.recipient.centre,
            recipient_name=new.recipient.name,
            permission=new.permission.value,
            expires_at=new.expires_at,
            pseudonym=new.pseudonym or new_pseudonym(),
            note=new.note,
            region=json.dumps(new.region.as_list()) if new.region else None,
            revoked_at=None,
            created_at=now,
            created_by=owner.username,
            opinion_id=opinion_id,
        )
        with self.db.session() as s:
            s.add(row)
            audit.append(
                s,
                actor=owner.username,
                action="share.create",
                centre_id=owner.centre,
                slide_id=new.slide_id,
                detail={
                    "share": row.share_id,
                    "to": f"{new.recipient.kind.value}:{new.recipient.name}@{new.recipient.centre}",
                    "permission": new.permission.value,
                    "expires_at": new.expires_at.isoformat(),
                    "opinion": opinion_id,
                },
            )
        logger.info("share created for centre %s", new.recipient.centre)
        share = _to_share(row)
        if self.on_create is not None:
            self.on_create(share)
        return share

    def revoke(self, actor: str, share_id: str) -> Share:
        """End a share now; idempotent."""
        now = datetime.now(UTC)
        with self.db.session() as s:
            row = s.get(ShareRow, share_id)
            if row is None:
                raise NotFoundError(f"share {share_id!r} not found")
            if row.revoked_at is None:
                row.revoked_at = now
                audit.append(
                    s,
                    actor=actor,
                    action="share.revoke",
                    centre_id=row.owner_centre,
                    slide_id=row.slide_id,
                    detail={"share": share_id},
                )
            share = _to_share(row)
        if self.on_revoke is not None:
            self.on_revoke(share)
        return share

    def revoke_for_opinion(self, actor: str, opinion_id: int) -> list[str]:
        """Revoke every live share a second-opinion request created."""
        with self.db.session() as s:
            ids = list(
                s.scalars(
                    select(ShareRow.share_id).where(
                        ShareRow.opinion_id == opinion_id, ShareRow.revoked_at.is_(None)
                    )
                )
            )
        for share_id in ids:
            self.revoke(actor, share_id)
        return ids

    def for_opinion(self, opinion_id: int) -> list[Share]:
        with self.db.session() as s:
            rows = s.scalars(
                select(ShareRow)
                .where(ShareRow.opinion_id == opinion_id)
                .order_by(ShareRow.slide_id)
            ).all()
            return [_to_share(row) for row in rows]

    def owned_by(self, centre: str, created_by: str | None = None) -> list[Share]:
        """A centre's shares (optionally those one user made), newest first."""
        q = select(ShareRow).where(ShareRow.owner_centre == centre)
        if created_by is not None:
            q = q.where(ShareRow.created_by == created_by)
        with self.db.session() as s:
            rows = s.scalars(q.order_by(ShareRow.created_at.desc()).limit(5000)).all()
            return [_to_share(row) for row in rows]

    def creator(self, share_id: str) -> str | None:
        with self.db.session() as s:
            row = s.get(ShareRow, share_id)
            return row.created_by if row is not None else None

    def local_grant(self, principal: Principal, slide: SlideRef, action: Action) -> Decision:
        """May ``principal`` (a user of another centre on this node) see ``slide`` by a share?

        Viewing only (and annotation reads); label and macro images never leave their centre.
        The decision is pseudonymised: the slide's name is withheld from the recipient.
        """
        if action not in (Action.SLIDE_VIEW, Action.ANNOTATION_READ):
            return Decision(False, "shares grant viewing only")
        if principal.role not in (Role.PATHOLOGIST, Role.ADMIN):
            return Decision(False, "shares are for clinicians")
        names = [principal.username, *groups_of(principal)]
        now = datetime.now(UTC)
        with self.db.session() as s:
            rows = s.scalars(
                select(ShareRow).where(
                    ShareRow.owner_centre == slide.centre,
                    ShareRow.slide_id == slide.slide_id,
                    ShareRow.recipient_centre == principal.centre,
                    ShareRow.recipient_name.in_(names),
                    ShareRow.revoked_at.is_(None),
                )
            ).all()
            shares = [_to_share(row) for row in rows]
        claims = {
            "iss": principal.centre,
            "sub": principal.username,
            "groups": groups_of(principal),
        }
        for share in shares:
            try:
                authorize_share(share, claims, now)
            except ShareAccessError:
                continue
            return Decision(True, f"share {share.share_id}", pseudonymised=True)
        return Decision(False, "slide belongs to another centre")

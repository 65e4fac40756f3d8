"""Owner-centre review: who, at which centre, looked at one of our slides, when, where, and why.

Read from the hash-chained audit trail (the only record of access) and the shares table:

- ``slide.view`` records are aggregated views (regions = tile ranges per level); a peer node's
  views carry ``peer`` and ``share`` (its actor is ``user@node``), a local user's centre comes
  from the accounts table;
- ``federation.*`` records are peer requests one by one (info, refusals);
- each share names the request it serves (``opinion_id``) or the teaching collection that made
  it (its note), so every access is tied to "under which share or second-opinion request".

Only the slide's centre's admin may ask (``authorize(..., Action.ACCESS_REVIEW, ...)``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from share.accounts import Accounts
from share.authz import Action, AuditScope, Principal, authorize
from share.errors import ForbiddenError, SlideNotFoundError
from share.federation import Share
from share.models import AuditRecord, User
from share.shares import POOL_GROUP, DbShareRegistry

__all__ = ["AccessReview"]

logger = logging.getLogger(__name__)

_ACCESS_ACTIONS = ("slide.view", "federation.info", "federation.tile", "slide.associated")
MAX_ACCESSES = 5000  # per slide, newest first: a page, not an export (the audit export is that)


def _share_json(share: Share, now: datetime) -> dict[str, Any]:
    live = share.revoked_at is None and share.expires_at > now
    return {
        "share_id": share.share_id,
        "recipient": {
            "kind": share.recipient.kind.value,
            "centre": share.recipient.centre,
            "name": share.recipient.name,
        },
        "permission": share.permission.value,
        "pseudonym": share.pseudonym,
        "note": share.note,
        "expires_at": share.expires_at.isoformat(),
        "revoked_at": share.revoked_at.isoformat() if share.revoked_at else None,
        "live": live,
    }


def _who(actor: str, detail: dict[str, Any], local_centres: dict[str, str]) -> tuple[str, str]:
    """(user, centre) of a record: ``user@node`` for a peer's, else the account's centre."""
    peer = detail.get("peer")
    if peer:
        user, _, _ = actor.rpartition("@")
        return (user or actor), str(peer)
    if actor in local_centres:
        return actor, local_centres[actor]
    return _split_peer(actor)


def _centre_of(actor: str, local_centres: dict[str, str]) -> str:
    return local_centres[actor] if actor in local_centres else _split_peer(actor)[1]


def _split_peer(actor: str) -> tuple[str, str]:
    # Peer actors are "user@node" (FederationAuditTrail); anything else is an unknown local name.
    user, at, node = actor.rpartition("@")
    return (user, node) if at and user else (actor, "?")


def _granting_share(shares: Sequence[Share], user: str, centre: str, at: str) -> str | None:
    """The share (to ``user`` first, else to their centre's pool) live at ``at``, if any."""
    try:
        when = datetime.fromisoformat(at)
    except ValueError:
        when = None
    candidates = []
    for share in shares:
        if share.recipient.centre != centre or share.recipient.name not in (user, POOL_GROUP):
            continue
        if when is not None and (
            # "since" is kept to the second: a share made in that second may have granted it
            (share.created_at is not None and share.created_at > when + timedelta(seconds=1))
            or (share.revoked_at is not None and share.revoked_at < when)
        ):
            continue
        candidates.append((share.recipient.name != user, share.share_id))
    return min(candidates)[1] if candidates else None


class AccessReview:
    """The per-slide access report of a centre (the service behind ``/api/review``)."""

    def __init__(self, accounts: Accounts, shares: DbShareRegistry) -> None:
        self.accounts = accounts
        self.shares = shares

    def _check(self, who: Principal, slide_id: str | None) -> None:
        decision = authorize(who, Action.ACCESS_REVIEW, AuditScope(who.centre, slide_id))
        if not decision:
            raise ForbiddenError(f"access review: {decision.reason}")

    def slides(self, who: Principal) -> list[dict[str, Any]]:
        """Every slide of the caller's centre with its access counts and live shares.

        Aggregated in SQL per (slide, actor, outcome): the whole trail counts, however long.
        """
        self._check(who, None)
        now = datetime.now(UTC)
        ours = [(r.slide_id, name) for r, name in self.accounts.slides() if r.centre == who.centre]
        local_centres = self._user_centres()
        live: dict[str, int] = {}
        for share in self.shares.owned_by(who.centre):
            if share.revoked_at is None and share.expires_at > now:
                live[share.slide_id] = live.get(share.slide_id, 0) + 1
        counts: dict[str, int] = {}
        last: dict[str, str] = {}
        centres: dict[str, set[str]] = {}
        with self.accounts.db.session() as s:
            rows = s.execute(
                select(
                    AuditRecord.slide_id,
                    AuditRecord.actor,
                    AuditRecord.outcome,
                    func.count(),
                    func.max(AuditRecord.at),
                )
                .where(
                    AuditRecord.centre_id == who.centre,
                    AuditRecord.slide_id.is_not(None),
                    AuditRecord.action.in_(_ACCESS_ACTIONS),
                )
                .group_by(AuditRecord.slide_id, AuditRecord.actor, AuditRecord.outcome)
            ).all()
        for slide_id, actor, outcome, n, at in rows:
            sid = str(slide_id)
            counts[sid] = counts.get(sid, 0) + int(n)
            last[sid] = max(last.get(sid, ""), str(at))
            if outcome == "ok":
                centres.setdefault(sid, set()).add(_centre_of(str(actor), local_centres))
        return [
            {
                "slide_id": slide_id,
                "name": name,
                "accesses": counts.get(slide_id, 0),
                "centres": sorted(centres.get(slide_id, ())),
                "last_access": last.get(slide_id),
                "live_shares": live.get(slide_id, 0),
            }
            for slide_id, name in sorted(ours, key=lambda pair: pair[1])
        ]

    def slide(self, who: Principal, slide_id: str) -> dict[str, Any]:
        """Accesses of one slide, oldest first, and its shares (live or ended)."""
        ref = self.accounts.slide(slide_id)
        if ref is None or ref.centre != who.centre:
            raise SlideNotFoundError(slide_id)
        self._check(who, slide_id)
        now = datetime.now(UTC)
        shares = [s for s in self.shares.owned_by(who.centre) if s.slide_id == slide_id]
        by_id = {s.share_id: s for s in shares}
        opinions = self._opinion_of([s.share_id for s in shares])
        local_centres = self._user_centres()
        accesses = []
        with self.accounts.db.session() as s:
            recs = s.scalars(
                select(AuditRecord)
                .where(
                    AuditRecord.centre_id == who.centre,
                    AuditRecord.slide_id == slide_id,
                    AuditRecord.action.in_(_ACCESS_ACTIONS),
                )
                .order_by(AuditRecord.seq.desc())
                .limit(MAX_ACCESSES)
            ).all()
        for rec in reversed(recs):
            detail = json.loads(rec.detail)
            user, centre = _who(rec.actor, detail, local_centres)
            share_id = detail.get("share")
            if share_id is None and centre != who.centre:
                # A user of another centre on this node: the share that granted it (as
                # ``local_grant`` decides: to them or their centre's pool, live at the time).
                share_id = _granting_share(shares, user, centre, detail.get("since") or rec.at)
            share = by_id.get(str(share_id)) if share_id else None
            accesses.append(
                {
                    "at": rec.at,
                    "since": detail.get("since"),
                    "user": user,
                    "centre": centre,
                    "action": rec.action,
                    "outcome": rec.outcome,
                    "share_id": share_id,
                    "opinion_id": opinions.get(str(share_id)) if share_id else None,
                    "share_note": share.note if share is not None else None,
                    "regions": detail.get("regions"),
                    "tiles": detail.get("tiles"),
                    "seq": rec.seq,
                }
            )
        return {
            "slide_id": slide_id,
            "accesses": accesses,
            "shares": [_share_json(s, now) for s in shares],
        }

    def _user_centres(self) -> dict[str, str]:
        with self.accounts.db.session() as s:
            rows = s.execute(select(User.username, User.centre_id)).all()
        return {str(u): str(c) for u, c in rows}

    def _opinion_of(self, share_ids: Sequence[str]) -> dict[str, int]:
        from share.opinion_models import ShareRow  # the table the share registry owns

        if not share_ids:
            return {}
        with self.accounts.db.session() as s:
            rows = s.execute(
                select(ShareRow.share_id, ShareRow.opinion_id).where(
                    ShareRow.share_id.in_(list(share_ids)), ShareRow.opinion_id.is_not(None)
                )
            ).all()
        return {str(sid): int(oid) for sid, oid in rows if oid is not None}

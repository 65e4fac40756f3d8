"""Append-only audit trail with a hash chain.

Each record's ``hash`` is SHA-256 over the previous record's hash and the canonical JSON (sorted
keys, no spaces, UTF-8) of its own fields, so changing, deleting or reordering any stored row
breaks every later link and ``verify`` names the first bad record. Appenders update the single
``audit_head`` row first, which serialises them on SQLite and PostgreSQL alike.

Slide views are aggregated per session by ``ViewAggregator`` into one record per
(session, slide) flush, listing the tile ranges seen per level, never one row per tile.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from share.db import Database
from share.errors import AuditChainError
from share.models import AuditHead, AuditRecord

__all__ = [
    "GENESIS",
    "ViewAggregator",
    "append",
    "export_csv",
    "export_json",
    "records",
    "verify",
]

logger = logging.getLogger(__name__)

GENESIS = "0" * 64
PEER_SESSION = "peer:"
FIELDS = ("seq", "at", "actor", "action", "outcome", "centre_id", "slide_id", "detail")


def _canonical(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _digest(prev_hash: str, fields: dict[str, Any]) -> str:
    return hashlib.sha256(prev_hash.encode() + _canonical(fields)).hexdigest()


def _fields(rec: AuditRecord) -> dict[str, Any]:
    return {name: getattr(rec, name) for name in FIELDS}


def append(
    s: Session,
    *,
    actor: str,
    action: str,
    outcome: str = "ok",
    centre_id: str | None = None,
    slide_id: str | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditRecord:
    """Add one record inside the caller's transaction (it commits or rolls back with it)."""
    # UPDATE first: takes the write lock (SQLite) / row lock (PostgreSQL) before reading.
    s.execute(update(AuditHead).where(AuditHead.id == 1).values(seq=AuditHead.seq + 1))
    head = s.execute(select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == 1)).one()
    seq, prev = int(head[0]), str(head[1])
    fields: dict[str, Any] = {
        "seq": seq,
        "at": datetime.now(UTC).isoformat(timespec="microseconds"),
        "actor": actor,
        "action": action,
        "outcome": outcome,
        "centre_id": centre_id,
        "slide_id": slide_id,
        "detail": json.dumps(detail or {}, sort_keys=True, separators=(",", ":")),
    }
    digest = _digest(prev, fields)
    rec = AuditRecord(**fields, prev_hash=prev, hash=digest)
    s.add(rec)
    s.execute(update(AuditHead).where(AuditHead.id == 1).values(hash=digest))
    s.flush()
    return rec


@dataclass(frozen=True)
class VerifyResult:
    records: int
    head_seq: int


def verify(db: Database, batch: int = 5000) -> VerifyResult:
    """Walk the whole chain; raise AuditChainError naming the first record that does not match."""
    prev, expected_seq, count = GENESIS, 1, 0
    with db.session() as s:
        head_seq, head_hash = s.execute(select(AuditHead.seq, AuditHead.hash)).one()
        last = 0
        while True:
            rows = s.scalars(
                select(AuditRecord)
                .where(AuditRecord.seq > last)
                .order_by(AuditRecord.seq)
                .limit(batch)
            ).all()
            if not rows:
                break
            for rec in rows:
                if rec.seq != expected_seq:
                    raise AuditChainError(
                        f"audit record {expected_seq} is missing (next stored is {rec.seq})"
                    )
                if rec.prev_hash != prev:
                    raise AuditChainError(f"audit record {rec.seq}: prev_hash does not link")
                if _digest(prev, _fields(rec)) != rec.hash:
                    raise AuditChainError(
                        f"audit record {rec.seq} ({rec.action} by {rec.actor}) was modified"
                    )
                prev, expected_seq, count = rec.hash, expected_seq + 1, count + 1
            last = rows[-1].seq
    if head_seq != count or head_hash != prev:
        raise AuditChainError(
            f"audit head says {head_seq} records, chain has {count}: records were removed"
        )
    return VerifyResult(count, head_seq)


def records(
    db: Database,
    *,
    centre_id: str,
    slide_id: str | None = None,
    action_prefix: str | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Records about a centre's slides (optionally one slide, or actions starting with
    ``action_prefix``), oldest first; with ``limit``, the NEWEST ``limit`` of them -- an export
    that stopped at the oldest rows would hide exactly the accesses an admin asks about."""
    q = select(AuditRecord).where(AuditRecord.centre_id == centre_id)
    if slide_id is not None:
        q = q.where(AuditRecord.slide_id == slide_id)
    if action_prefix is not None:
        q = q.where(AuditRecord.action.startswith(action_prefix, autoescape=True))
    q = q.order_by(AuditRecord.seq.desc())
    if limit is not None:
        q = q.limit(limit)
    with db.session() as s:
        out = []
        for rec in s.scalars(q):
            row = _fields(rec)
            row["detail"] = json.loads(rec.detail)
            row["hash"] = rec.hash
            out.append(row)
    out.reverse()
    return out


def export_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, ensure_ascii=False, indent=1)


def export_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[*FIELDS, "hash"], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "detail": json.dumps(row["detail"], sort_keys=True)})
    return buf.getvalue()


@dataclass
class _Seen:
    actor: str
    centre_id: str
    first_at: str
    tiles: int = 0
    grants: int = 0  # signed tile grants (share/tile_grants.py): their tiles are not counted
    # level -> [min_col, min_row, max_col, max_row]
    levels: dict[str, list[int]] = field(default_factory=dict)


class ViewAggregator:
    """Collect tile views per (session, slide) in memory and flush them as audit records.

    Flushes when ``flush_s`` has passed since the last flush (checked on each record), on
    ``flush_session`` (logout) and on ``flush`` (shutdown).
    """

    def __init__(
        self, db: Database, flush_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.db = db
        self.flush_s = flush_s
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], _Seen] = {}
        self._last_flush = clock()

    def _seen_locked(self, session_id: str, actor: str, centre_id: str, slide_id: str) -> _Seen:
        seen = self._seen.get((session_id, slide_id))
        if seen is None:
            seen = self._seen[(session_id, slide_id)] = _Seen(
                actor, centre_id, datetime.now(UTC).isoformat(timespec="seconds")
            )
        return seen

    def record(
        self,
        session_id: str,
        actor: str,
        centre_id: str,
        slide_id: str,
        level: str,
        col: int,
        row: int,
    ) -> None:
        with self._lock:
            seen = self._seen_locked(session_id, actor, centre_id, slide_id)
            seen.tiles += 1
            box = seen.levels.get(level)
            if box is None:
                seen.levels[level] = [col, row, col, row]
            else:
                box[0], box[1] = min(box[0], col), min(box[1], row)
                box[2], box[3] = max(box[2], col), max(box[3], row)
            due = self._clock() - self._last_flush >= self.flush_s
        if due:
            self.flush()

    def record_grant(self, session_id: str, actor: str, centre_id: str, slide_id: str) -> None:
        """A signed tile grant was issued: the view is recorded once per grant."""
        with self._lock:
            self._seen_locked(session_id, actor, centre_id, slide_id).grants += 1
            due = self._clock() - self._last_flush >= self.flush_s
        if due:
            self.flush()

    def _take(self, session_id: str | None) -> Iterator[tuple[tuple[str, str], _Seen]]:
        with self._lock:
            keys = [k for k in self._seen if session_id is None or k[0] == session_id]
            taken = [(k, self._seen.pop(k)) for k in keys]
            if session_id is None:
                self._last_flush = self._clock()
        return iter(taken)

    def flush(self, session_id: str | None = None) -> int:
        """Write the pending views (of one session, or all); returns records written."""
        taken = list(self._take(session_id))
        if not taken:
            return 0
        with self.db.session() as s:
            for (sid, slide_id), seen in taken:
                detail: dict[str, Any] = {
                    "session": sid[:12],
                    "since": seen.first_at,
                    "tiles": seen.tiles,
                    "regions": dict(sorted(seen.levels.items())),
                }
                if seen.grants:
                    detail["tile_grants"] = seen.grants
                if sid.startswith(PEER_SESSION):
                    # A peer's views (FederationAuditTrail keys them "peer:<node>:<share id>"):
                    # the owner's review says which node and which share, not a truncated key.
                    _, detail["peer"], detail["share"] = sid.split(":", 2)
                append(
                    s,
                    actor=seen.actor,
                    action="slide.view",
                    centre_id=seen.centre_id,
                    slide_id=slide_id,
                    detail=detail,
                )
        return len(taken)

    flush_session = flush

    async def flush_periodically(self) -> None:
        """Run beside the app: write pending views every ``flush_s`` even when the session has
        gone quiet (a crash then loses at most one interval). Cancel it at shutdown."""
        while True:
            await asyncio.sleep(self.flush_s)
            try:
                await asyncio.to_thread(self.flush)
            except Exception:  # keep flushing later; the views stay pending
                logger.exception("audit: flushing slide views failed")

"""SQLAlchemy tables of teaching collections (Alembic revision ``0005_collections``).

A collection's items point at slides of the owner centre; what leaves the centre is decided by
the shares each item holds (``shares`` JSON: audience centre -> share id), never by these rows.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from share.models import Base

__all__ = ["CollectionItemRow", "CollectionRow"]


class CollectionRow(Base):
    """A curated slide set of one centre, shown to the centres of its ``audience`` (JSON list)."""

    __tablename__ = "collections"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner_centre: Mapped[str] = mapped_column(String(64), index=True)
    created_by: Mapped[str] = mapped_column(String(150))
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text)
    audience: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class CollectionItemRow(Base):
    """One slide of a collection: its pseudonym, pinned regions (JSON) and per-centre shares."""

    __tablename__ = "collection_items"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    collection_id: Mapped[int] = mapped_column(
        ForeignKey("collections.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int] = mapped_column(Integer)
    slide_id: Mapped[str] = mapped_column(String(200))
    pseudonym: Mapped[str] = mapped_column(String(64))
    note: Mapped[str] = mapped_column(Text)
    regions: Mapped[str] = mapped_column(Text)
    shares: Mapped[str] = mapped_column(Text)

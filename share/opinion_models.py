"""SQLAlchemy tables of DB-backed shares, second-opinion requests and notifications.

Created by the Alembic revision ``0004_opinions_shares`` (never ``create_all``); kept apart from
``share.models`` so the accounts tables and these evolve in separate files.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, DateTime, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from share.models import Base

__all__ = ["NotificationAddress", "NotificationRow", "OpinionRow", "ShareRow"]


class ShareRow(Base):
    """One slide shared by its owner centre with a user or a group at another centre."""

    __tablename__ = "shares"
    __table_args__ = (
        Index("ix_shares_recipient", "recipient_centre", "recipient_name"),
        Index("ix_shares_slide", "owner_centre", "slide_id"),
    )
    share_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner_centre: Mapped[str] = mapped_column(String(64))
    slide_id: Mapped[str] = mapped_column(String(200))
    recipient_kind: Mapped[str] = mapped_column(String(16))
    recipient_centre: Mapped[str] = mapped_column(String(64))
    recipient_name: Mapped[str] = mapped_column(String(150))
    permission: Mapped[str] = mapped_column(String(16))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    pseudonym: Mapped[str] = mapped_column(String(64))
    note: Mapped[str] = mapped_column(Text)
    region: Mapped[str | None] = mapped_column(String(100), nullable=True)  # JSON [x, y, w, h]
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str] = mapped_column(String(150))
    opinion_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)


class OpinionRow(Base):
    """A second-opinion request; ``items`` and ``answer`` are JSON text."""

    __tablename__ = "opinion_requests"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    requester_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    requester_centre: Mapped[str] = mapped_column(String(64))
    consultant_kind: Mapped[str] = mapped_column(String(16))  # user | pool
    consultant_centre: Mapped[str] = mapped_column(String(64), index=True)
    consultant_name: Mapped[str] = mapped_column(String(150))  # username, or "" for a pool
    assignee: Mapped[str | None] = mapped_column(String(150), nullable=True)
    question: Mapped[str] = mapped_column(Text)
    urgency: Mapped[str] = mapped_column(String(16))
    due_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    state: Mapped[str] = mapped_column(String(16))
    items: Mapped[str] = mapped_column(Text)
    answer: Mapped[str | None] = mapped_column(Text, nullable=True)
    decline_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_reminder_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )


class NotificationRow(Base):
    """An in-app notice for one user (``GET /api/notifications``)."""

    __tablename__ = "notifications"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    kind: Mapped[str] = mapped_column(String(32))
    opinion_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    text: Mapped[str] = mapped_column(String(500))
    read: Mapped[bool] = mapped_column(Boolean)


class NotificationAddress(Base):
    """Where a user's e-mail notices go (kept beside, not in, the accounts table)."""

    __tablename__ = "notification_addresses"
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    email: Mapped[str] = mapped_column(String(254))

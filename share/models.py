"""SQLAlchemy tables of accounts, sessions, slides and the audit trail.

The schema is created by the Alembic migrations in ``share/migrations`` (never ``create_all``);
``tests/share/test_db.py`` checks that these classes and the migrations agree.
Timestamps are timezone-aware UTC; the audit table keeps its own as ISO text so that the hash
chain covers exactly the bytes stored.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "Annotation",
    "AnnotationClass",
    "AnnotationVersion",
    "AuditHead",
    "AuditRecord",
    "Base",
    "Centre",
    "LoginAttempt",
    "OidcPending",
    "Session",
    "Slide",
    "User",
]


class Base(DeclarativeBase):
    pass


class Centre(Base):
    __tablename__ = "centres"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(150), unique=True)
    centre_id: Mapped[str] = mapped_column(ForeignKey("centres.id"))
    role: Mapped[str] = mapped_column(String(32))
    password_hash: Mapped[str | None] = mapped_column(String(255), nullable=True)
    oidc_subject: Mapped[str | None] = mapped_column(String(255), unique=True, nullable=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Session(Base):
    """A login session; ``id`` is the SHA-256 of the cookie token (a DB dump holds no tokens)."""

    __tablename__ = "sessions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    ip: Mapped[str] = mapped_column(String(64), default="")


class LoginAttempt(Base):
    __tablename__ = "login_attempts"
    __table_args__ = (Index("ix_login_attempts_user_ip_at", "username", "ip", "at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(150))
    ip: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ok: Mapped[bool] = mapped_column(Boolean)


class Slide(Base):
    """Which centre a slide belongs to; ``name`` may identify a patient (never shown to ml)."""

    __tablename__ = "slides"
    slide_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    centre_id: Mapped[str] = mapped_column(ForeignKey("centres.id"), index=True)
    name: Mapped[str] = mapped_column(String(500), default="")


class AuditRecord(Base):
    """One append-only audit record; ``hash`` = SHA-256(prev_hash + canonical JSON)."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_centre_slide", "centre_id", "slide_id"),)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[str] = mapped_column(String(40))
    actor: Mapped[str] = mapped_column(String(150))
    action: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))
    centre_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    slide_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    detail: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """Single row: the last seq and hash; updating it first serialises appenders on any DB."""

    __tablename__ = "audit_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))


class AnnotationClass(Base):
    """A classification (QuPath's PathClass): name and display colour ``#rrggbb``."""

    __tablename__ = "annotation_classes"
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    color: Mapped[str] = mapped_column(String(7))


class Annotation(Base):
    """Current state of one annotation; past states live in ``annotation_history``.

    ``geometry`` is GeoJSON text in level-0 pixels; ``properties`` holds the source's other
    properties verbatim (QuPath round-trip). The bbox columns give the grid key ``cell`` of
    ``share.spatial``, indexed with ``(slide_id, cell)``: the spatial index, on both databases.
    """

    __tablename__ = "annotations"
    __table_args__ = (
        Index("ix_annotations_slide_layer", "slide_id", "layer"),
        Index("ix_annotations_slide_cell", "slide_id", "cell"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    uuid: Mapped[str] = mapped_column(String(64))
    slide_id: Mapped[str] = mapped_column(String(200))
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    layer: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(16))
    object_type: Mapped[str] = mapped_column(String(16))
    class_name: Mapped[str | None] = mapped_column(String(100), nullable=True)
    comment: Mapped[str] = mapped_column(Text)
    geometry: Mapped[str] = mapped_column(Text)
    properties: Mapped[str] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer)
    deleted: Mapped[bool] = mapped_column(Boolean)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    min_x: Mapped[float] = mapped_column(Float)
    min_y: Mapped[float] = mapped_column(Float)
    max_x: Mapped[float] = mapped_column(Float)
    max_y: Mapped[float] = mapped_column(Float)
    cell: Mapped[int] = mapped_column(BigInteger)


class AnnotationVersion(Base):
    """A replaced state: the snapshot (JSON) of ``annotation_id`` at ``version``."""

    __tablename__ = "annotation_history"
    __table_args__ = (Index("ix_annotation_history_ann_version", "annotation_id", "version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    annotation_id: Mapped[int] = mapped_column(ForeignKey("annotations.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    actor: Mapped[str] = mapped_column(String(150))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    op: Mapped[str] = mapped_column(String(16))
    snapshot: Mapped[str] = mapped_column(Text)


class OidcPending(Base):
    """An OIDC login between the redirect to the provider and its callback (single use)."""

    __tablename__ = "oidc_pending"
    state: Mapped[str] = mapped_column(String(64), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(64))
    code_verifier: Mapped[str] = mapped_column(String(128))
    next_url: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

"""DB-backed shares, second-opinion requests, in-app notifications and e-mail addresses.

Revision ID: 0004_opinions
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_opinions"
down_revision = "0003"
branch_labels = None
depends_on = None

_TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "shares",
        sa.Column("share_id", sa.String(64), primary_key=True),
        sa.Column("owner_centre", sa.String(64), nullable=False),
        sa.Column("slide_id", sa.String(200), nullable=False),
        sa.Column("recipient_kind", sa.String(16), nullable=False),
        sa.Column("recipient_centre", sa.String(64), nullable=False),
        sa.Column("recipient_name", sa.String(150), nullable=False),
        sa.Column("permission", sa.String(16), nullable=False),
        sa.Column("expires_at", _TZ, nullable=False),
        sa.Column("pseudonym", sa.String(64), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("region", sa.String(100), nullable=True),
        sa.Column("revoked_at", _TZ, nullable=True),
        sa.Column("created_at", _TZ, nullable=False),
        sa.Column("created_by", sa.String(150), nullable=False),
        sa.Column("opinion_id", sa.Integer(), nullable=True),
    )
    op.create_index("ix_shares_recipient", "shares", ["recipient_centre", "recipient_name"])
    op.create_index("ix_shares_slide", "shares", ["owner_centre", "slide_id"])
    op.create_index("ix_shares_opinion_id", "shares", ["opinion_id"])
    op.create_table(
        "opinion_requests",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("requester_id", sa.Integer(), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("requester_centre", sa.String(64), nullable=False),
        sa.Column("consultant_kind", sa.String(16), nullable=False),
        sa.Column("consultant_centre", sa.String(64), nullable=False),
        sa.Column("consultant_name", sa.String(150), nullable=False),
        sa.Column("assignee", sa.String(150), nullable=True),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("urgency", sa.String(16), nullable=False),
        sa.Column("due_at", _TZ, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("items", sa.Text(), nullable=False),
        sa.Column("answer", sa.Text(), nullable=True),
        sa.Column("decline_reason", sa.Text(), nullable=True),
        sa.Column("created_at", _TZ, nullable=False),
        sa.Column("updated_at", _TZ, nullable=False),
        sa.Column("last_reminder_at", _TZ, nullable=True),
    )
    op.create_index("ix_opinion_requests_requester_id", "opinion_requests", ["requester_id"])
    op.create_index(
        "ix_opinion_requests_consultant_centre", "opinion_requests", ["consultant_centre"]
    )
    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "user_id",
            sa.Integer(),
            sa.ForeignKey("users.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("at", _TZ, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("opinion_id", sa.Integer(), nullable=True),
        sa.Column("text", sa.String(500), nullable=False),
        sa.Column("read", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_notifications_user_id", "notifications", ["user_id"])
    op.create_table(
        "notification_addresses",
        sa.Column(
            "user_id",
            sa.Integer(),
            sa.ForeignKey("users.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("email", sa.String(254), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("notification_addresses")
    op.drop_table("notifications")
    op.drop_table("opinion_requests")
    op.drop_table("shares")

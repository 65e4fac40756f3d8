"""Teaching collections and their items.

Revision ID: 0005_collections
Revises: 0004_opinions
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_collections"
down_revision = "0004_opinions"
branch_labels = None
depends_on = None

_TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "collections",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("owner_centre", sa.String(64), nullable=False),
        sa.Column("created_by", sa.String(150), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("audience", sa.Text(), nullable=False),
        sa.Column("created_at", _TZ, nullable=False),
        sa.Column("expires_at", _TZ, nullable=False),
        sa.Column("revoked_at", _TZ, nullable=True),
    )
    op.create_index("ix_collections_owner_centre", "collections", ["owner_centre"])
    op.create_table(
        "collection_items",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "collection_id",
            sa.Integer(),
            sa.ForeignKey("collections.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("slide_id", sa.String(200), nullable=False),
        sa.Column("pseudonym", sa.String(64), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("regions", sa.Text(), nullable=False),
        sa.Column("shares", sa.Text(), nullable=False),
    )
    op.create_index("ix_collection_items_collection_id", "collection_items", ["collection_id"])


def downgrade() -> None:
    op.drop_table("collection_items")
    op.drop_table("collections")

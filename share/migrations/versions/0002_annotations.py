"""Annotations, classes, edit history and the spatial index.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "annotation_classes",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("color", sa.String(7), nullable=False),
    )
    op.create_table(
        "annotations",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("uuid", sa.String(64), nullable=False),
        sa.Column("slide_id", sa.String(200), nullable=False),
        sa.Column("owner_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("layer", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("object_type", sa.String(16), nullable=False),
        sa.Column("class_name", sa.String(100), nullable=True),
        sa.Column("comment", sa.Text, nullable=False),
        sa.Column("geometry", sa.Text, nullable=False),
        sa.Column("properties", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("deleted", sa.Boolean, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("min_x", sa.Float, nullable=False),
        sa.Column("min_y", sa.Float, nullable=False),
        sa.Column("max_x", sa.Float, nullable=False),
        sa.Column("max_y", sa.Float, nullable=False),
    )
    op.create_index("ix_annotations_slide_layer", "annotations", ["slide_id", "layer"])
    op.create_index("ix_annotations_owner_id", "annotations", ["owner_id"])
    op.create_table(
        "annotation_history",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "annotation_id",
            sa.Integer,
            sa.ForeignKey("annotations.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("actor", sa.String(150), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("op", sa.String(16), nullable=False),
        sa.Column("snapshot", sa.Text, nullable=False),
    )
    op.create_index(
        "ix_annotation_history_ann_version", "annotation_history", ["annotation_id", "version"]
    )
    if op.get_bind().dialect.name == "postgresql":
        # Core PostgreSQL GiST on a box expression: a spatial index without PostGIS.
        op.execute(
            "CREATE INDEX ix_annotations_bbox ON annotations "
            "USING gist (box(point(min_x, min_y), point(max_x, max_y)))"
        )
    else:
        op.execute(
            "CREATE VIRTUAL TABLE annotations_rtree USING rtree(id, min_x, max_x, min_y, max_y)"
        )
        op.execute(
            "CREATE TRIGGER annotations_rtree_insert AFTER INSERT ON annotations BEGIN "
            "INSERT INTO annotations_rtree VALUES "
            "(new.id, new.min_x, new.max_x, new.min_y, new.max_y); END"
        )
        op.execute(
            "CREATE TRIGGER annotations_rtree_update AFTER UPDATE OF min_x, min_y, max_x, max_y "
            "ON annotations BEGIN UPDATE annotations_rtree SET min_x = new.min_x, "
            "max_x = new.max_x, min_y = new.min_y, max_y = new.max_y WHERE id = new.id; END"
        )
        op.execute(
            "CREATE TRIGGER annotations_rtree_delete AFTER DELETE ON annotations BEGIN "
            "DELETE FROM annotations_rtree WHERE id = old.id; END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        op.execute("DROP TABLE annotations_rtree")
    op.drop_table("annotation_history")
    op.drop_table("annotations")
    op.drop_table("annotation_classes")

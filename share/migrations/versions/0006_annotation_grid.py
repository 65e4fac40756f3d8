"""Annotations: grid key column + (slide_id, cell) index replace SQLite's R*Tree.

The R*Tree's insert (~12 us a row at 10^6 rows) alone took most of the 10^6-polygon import
budget; see ``share/spatial.py``. PostgreSQL's GiST box index goes too (its inserts bounded a
10^6-row COPY); both databases now answer viewports from the same key ranges.

Revision ID: 0006_grid
Revises: 0005_collections
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from share.spatial import cell_key

revision = "0006_grid"
down_revision = "0005_collections"
branch_labels = None
depends_on = None

_BATCH = 10_000


def _backfill() -> None:
    bind = op.get_bind()
    rows = bind.execute(sa.text("SELECT id, min_x, min_y, max_x, max_y FROM annotations")).all()
    update = sa.text("UPDATE annotations SET cell = :cell WHERE id = :id")
    for start in range(0, len(rows), _BATCH):
        bind.execute(
            update,
            [
                {"id": r[0], "cell": cell_key(r[1], r[2], r[3], r[4])}
                for r in rows[start : start + _BATCH]
            ],
        )


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        # Before the batch table copy below, which would drop the triggers anyway.
        for trigger in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER annotations_rtree_{trigger}")
        op.execute("DROP TABLE annotations_rtree")
    op.add_column("annotations", sa.Column("cell", sa.BigInteger, nullable=True))
    _backfill()
    with op.batch_alter_table("annotations") as batch:
        batch.alter_column("cell", existing_type=sa.BigInteger, nullable=False)
    op.create_index("ix_annotations_slide_cell", "annotations", ["slide_id", "cell"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX ix_annotations_bbox")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE INDEX ix_annotations_bbox ON annotations "
            "USING gist (box(point(min_x, min_y), point(max_x, max_y)))"
        )
    op.drop_index("ix_annotations_slide_cell", "annotations")
    with op.batch_alter_table("annotations") as batch:
        batch.drop_column("cell")
    if op.get_bind().dialect.name != "postgresql":
        op.execute(
            "CREATE VIRTUAL TABLE annotations_rtree USING rtree(id, min_x, max_x, min_y, max_y)"
        )
        op.execute(
            "INSERT INTO annotations_rtree SELECT id, min_x, max_x, min_y, max_y FROM annotations"
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

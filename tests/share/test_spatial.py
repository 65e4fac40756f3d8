"""The grid index of annotations: keys, viewport ranges against brute force, the query plan,
and the migration (down and up) that fills the key of annotations written before it."""

from __future__ import annotations

import json
import random
from typing import Any

import numpy as np
from alembic import command
from alembic.config import Config
from sqlalchemy import text

from share.accounts import Accounts
from share.db import MIGRATIONS, Database, open_database
from share.spatial import cell_key, cell_keys, viewport_ranges


def _random_boxes(rng: random.Random, n: int) -> list[tuple[float, float, float, float]]:
    boxes = []
    for _ in range(n):
        size = rng.choice([3.0, 12.0, 255.9, 256.0, 700.0, 5e4, 1.5e8])
        x, y = rng.uniform(-1e8, 1e8 - size), rng.uniform(-1e8, 1e8 - size)
        boxes.append((x, y, x + rng.uniform(0, size), y + rng.uniform(0, size)))
    return boxes


def test_ranges_find_every_box_meeting_the_viewport() -> None:
    rng = random.Random(5)
    boxes = _random_boxes(rng, 3000)
    # Cluster half of them near the origin so that small viewports meet some.
    boxes += [(x / 1e4, y / 1e4, x / 1e4 + 9, y / 1e4 + 7) for x, y, _, _ in boxes[:1500]]
    keys = [cell_key(*b) for b in boxes]
    arrays = [np.array(c, np.float64) for c in zip(*boxes, strict=True)]
    assert cell_keys(*arrays).tolist() == keys  # the vectorised keys are the same
    for _ in range(300):
        w, h = rng.choice([50.0, 2048.0, 3e4, 3e8]), rng.choice([50.0, 2048.0, 3e4])
        x0, y0 = rng.uniform(-1e4 - w, 1e4), rng.uniform(-1e4 - h, 1e4)
        x1, y1 = x0 + w, y0 + h
        ranges = viewport_ranges(x0, y0, x1, y1)
        found = {
            i
            for i, k in enumerate(keys)
            if any(lo <= k <= hi for lo, hi in ranges)
            and boxes[i][0] <= x1
            and boxes[i][2] >= x0
            and boxes[i][1] <= y1
            and boxes[i][3] >= y0
        }
        truth = {i for i, b in enumerate(boxes) if b[0] <= x1 and b[2] >= x0}
        truth &= {i for i, b in enumerate(boxes) if b[1] <= y1 and b[3] >= y0}
        assert found == truth


def test_a_screen_at_full_resolution_is_a_few_dozen_ranges() -> None:
    ranges = viewport_ranges(50_000, 50_000, 52_048, 51_200)
    assert len(ranges) < 80
    assert ranges == sorted(ranges, key=lambda r: -(r[0] >> 42))  # coarse levels first


def test_postgresql_viewport_plan_uses_the_grid_index(accounts: Accounts, people: Any) -> None:
    if accounts.db.dialect != "postgresql":
        return
    from share import annotations as store

    p, slide = accounts.principal("caen-patho"), accounts.slide("s-caen")
    assert slide is not None
    ring = [[0, 0], [9, 0], [9, 9], [0, 0]]
    features = [
        {
            "type": "Feature",
            "geometry": {
                "type": "Polygon",
                "coordinates": [[[x + i % 150 * 50, y + i // 150 * 50] for x, y in ring]],
            },
            "properties": {},
        }
        for i in range(15_000)
    ]
    store.import_geojson(accounts.db, p, slide, json.dumps(features).encode())  # + ANALYZE
    x, y = 2000.0, 2000.0
    params = {"ranges": json.dumps(viewport_ranges(x, y, x + 300, y + 300)), "slide": "s-caen"}
    params |= {"x0": x, "y0": y, "x1": x + 300, "y1": y + 300}
    with accounts.db.engine.connect() as conn:
        conn.execute(text("SET LOCAL jit = off"))
        plan = "\n".join(
            conn.execute(text("EXPLAIN " + store.VIEWPORT_SQL_PG + " LIMIT 5001"), params)
            .scalars()
            .all()
        )
    assert "Index Scan using ix_annotations_slide_cell" in plan, plan
    assert "Seq Scan on annotations" not in plan, plan


def test_viewport_query_plan_uses_the_grid_index(db: Database) -> None:
    if db.dialect != "sqlite":
        return
    from share.annotations import VIEWPORT_SQL_SQLITE

    with db.engine.connect() as conn:
        plan = conn.execute(
            text("EXPLAIN QUERY PLAN " + VIEWPORT_SQL_SQLITE + " LIMIT 10"),
            {"ranges": "[[0, 9]]", "slide": "s", "x0": 0, "y0": 0, "x1": 1, "y1": 1},
        ).all()
    details = [row[-1] for row in plan]
    assert details[0].startswith("SCAN g VIRTUAL TABLE")
    assert (
        "USING INDEX ix_annotations_slide_cell (slide_id=? AND cell>? AND cell<?)" in (details[1])
    )
    assert "USING INTEGER PRIMARY KEY" in details[2]  # users by id


def test_migration_fills_the_key_of_existing_annotations(db_url: str) -> None:
    db = open_database(db_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with db.engine.begin() as conn:  # down through 0006, as the CLI would
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0005_collections")
    with db.engine.begin() as conn:
        conn.execute(text("INSERT INTO centres VALUES ('c', 'C')"))
        conn.execute(
            text(
                "INSERT INTO users (id, username, centre_id, role, active, created_at) "
                "VALUES (1, 'u', 'c', 'pathologist', true, CURRENT_TIMESTAMP)"
            )
        )
        for i, (x, size) in enumerate([(10.0, 5.0), (-5e7, 3e4), (9e7, 1e3)]):
            conn.execute(
                text(
                    "INSERT INTO annotations (id, uuid, slide_id, owner_id, layer, kind, "
                    "object_type, class_name, comment, geometry, properties, version, deleted, "
                    "updated_at, min_x, min_y, max_x, max_y) VALUES (:id, '', 's', 1, 'l', "
                    "'polygon', 'annotation', NULL, '', '{}', '{}', 1, false, "
                    "CURRENT_TIMESTAMP, :x, :x, :x2, :x2)"
                ),
                {"id": i + 1, "x": x, "x2": x + size},
            )
    db.upgrade()
    with db.engine.connect() as conn:
        rows = conn.execute(text("SELECT min_x, max_x, cell FROM annotations ORDER BY id")).all()
    assert [r.cell for r in rows] == [cell_key(r.min_x, r.min_x, r.max_x, r.max_x) for r in rows]
    db.dispose()

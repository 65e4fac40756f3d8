"""Schema: the packaged migrations produce exactly the ORM tables, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading

from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

import share.collection_models  # its tables are part of the schema
import share.opinion_models  # noqa: F401  (its tables are part of the schema)
from share.db import MIGRATIONS, Database, open_database
from share.models import Base

SPATIAL = ("ix_annotations_bbox",)


def _not_rtree(obj: object, name: str | None, type_: str, *_: object) -> bool:
    # PostgreSQL's GiST expression index is created by the migration only: index machinery the
    # ORM does not model. (SQLite's grid index is an ordinary one, in the models.)
    return not (name is not None and name.startswith(SPATIAL))


def test_migrations_match_models(db: Database) -> None:
    with db.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"include_object": _not_rtree})
        diff = compare_metadata(ctx, Base.metadata)
    assert diff == []


def test_upgrade_is_idempotent_and_versioned(db_url: str) -> None:
    first = open_database(db_url)
    first.dispose()
    again = open_database(db_url)  # second start-up: nothing to do, no error
    with again.engine.connect() as conn:
        version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    assert version == ScriptDirectory.from_config(cfg).get_current_head()
    again.dispose()


def test_sqlite_runs_in_wal_mode(tmp_path: object) -> None:
    db = open_database(f"sqlite:///{tmp_path}/x/iain.db")
    with db.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    db.dispose()


def test_concurrent_start_ups_migrate_once(db_url: str) -> None:
    """Several workers starting together on a fresh database: one migrates, none fails."""
    errors: list[BaseException] = []

    def start() -> None:
        try:
            open_database(db_url).dispose()
        except BaseException as exc:  # collected for the assert below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []

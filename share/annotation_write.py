"""Bulk insert of annotation rows in one transaction: ``executemany`` on SQLite, ``COPY`` on
PostgreSQL, through the DB-API connection (SQLAlchemy's per-row parameter handling cost more
than SQLite's insert at 10^6 rows).

One thread: a producer thread measured no faster (load average 8, 2 x 10^5 features: 5.5-6.3 s
threaded, 4.3-5.0 s sequential) since sqlite3's executemany takes the GIL back for every row.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg.copy import QueuedLibpqWriter
from sqlalchemy import Connection

from share.db import Database

__all__ = ["WriteStats", "write_rows"]

# PostgreSQL plans the viewport query from table statistics: right after a large COPY, before
# autovacuum's analyze, it picked a plan 9x slower (p50 38 ms -> 4.2 ms at 10^6 after ANALYZE,
# which took 0.4 s).
ANALYZE_AFTER_ROWS = 10_000
# Binary COPY needs each column's wire type (int4 and int8 differ); varchar takes text's.
_PG_TYPES = {
    "uuid": "text",
    "kind": "text",
    "object_type": "text",
    "class_name": "text",
    "comment": "text",
    "geometry": "text",
    "properties": "text",
    "min_x": "float8",
    "min_y": "float8",
    "max_x": "float8",
    "max_y": "float8",
    "cell": "int8",
    "layer": "text",
    "slide_id": "text",
    "owner_id": "int4",
    "version": "int4",
    "deleted": "bool",
    "updated_at": "timestamptz",
}
_SQLITE_CACHE_KIB = 64 * 1024  # the (slide_id, cell) index gets random inserts: keep it hot


@dataclass
class WriteStats:
    """CPU seconds spent preparing the batches and writing them (logged by the import, read
    by the benchmark)."""

    prepare_cpu_s: float = 0.0
    write_cpu_s: float = 0.0
    rows: int = 0


def _timed(
    batches: Iterator[list[tuple[Any, ...]]], stats: WriteStats
) -> Iterator[list[tuple[Any, ...]]]:
    while True:
        start = time.thread_time()
        rows = next(batches, None)
        stats.prepare_cpu_s += time.thread_time() - start
        if rows is None:
            return
        yield rows


def _copy(
    driver: Any,
    names: str,
    types: list[str],
    batches: Iterator[list[tuple[Any, ...]]],
    stats: WriteStats,
) -> None:
    """Binary COPY (no float text to format or parse) through a queued writer: a psycopg
    thread sends the buffers while this one prepares the next batch, so the server inserts
    batch k while the client parses batch k + 1 (one connection, one transaction)."""
    sql = f"COPY annotations ({names}) FROM STDIN (FORMAT BINARY)"
    with driver.cursor() as cur, cur.copy(sql, writer=QueuedLibpqWriter(cur)) as cp:
        cp.set_types(types)
        for rows in batches:
            stats.rows += len(rows)
            for row in rows:
                cp.write_row(row)


def write_rows(
    db: Database,
    columns: Sequence[str],
    batches: Iterator[list[tuple[Any, ...]]],
    finish: Callable[[Connection], None],
) -> WriteStats:
    """Insert every batch into ``annotations``, then ``finish(conn)``, all in one
    transaction: an exception from ``batches`` (a bad feature) leaves nothing behind."""
    names = ", ".join(columns)
    stats = WriteStats()
    start = time.thread_time()
    with db.engine.begin() as conn:
        driver: Any = conn.connection.driver_connection
        if db.dialect == "postgresql":
            _copy(driver, names, [_PG_TYPES[c] for c in columns], _timed(batches, stats), stats)
        else:
            sql = f"INSERT INTO annotations ({names}) VALUES ({', '.join('?' * len(columns))})"
            cur = driver.cursor()
            (old_cache,) = cur.execute("PRAGMA cache_size").fetchone()
            cur.execute(f"PRAGMA cache_size = -{_SQLITE_CACHE_KIB}")
            try:
                for rows in _timed(batches, stats):
                    stats.rows += len(rows)
                    cur.executemany(sql, rows)
            finally:
                cur.execute(f"PRAGMA cache_size = {int(old_cache)}")
                cur.close()
        finish(conn)
    if db.dialect == "postgresql" and stats.rows >= ANALYZE_AFTER_ROWS:
        with db.engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE annotations")
    stats.write_cpu_s = time.thread_time() - start - stats.prepare_cpu_s  # commit included
    return stats

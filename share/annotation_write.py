"""Bulk insert of annotation rows in one transaction: ``executemany`` on SQLite, ``COPY`` on
PostgreSQL, through the DB-API connection (SQLAlchemy's per-row parameter handling cost more
than SQLite's insert at 10^6 rows).

The rows are produced in a second thread while this one writes: SQLite and psycopg release
the GIL while they work, so on two cores parsing batch k+1 overlaps writing batch k.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from sqlalchemy import Connection

from share.db import Database

__all__ = ["write_rows"]

_DONE = object()
_SQLITE_CACHE_KIB = 64 * 1024  # the (slide_id, cell) index gets random inserts: keep it hot


def _produce(
    batches: Iterator[list[tuple[Any, ...]]], out: queue.Queue[Any], stop: threading.Event
) -> None:
    try:
        for rows in batches:
            if stop.is_set():
                return
            out.put(rows)
        out.put(_DONE)
    except BaseException as exc:  # handed to the writer, which raises it and rolls back
        out.put(exc)


def _prefetched(batches: Iterator[list[tuple[Any, ...]]]) -> Iterator[list[tuple[Any, ...]]]:
    out: queue.Queue[Any] = queue.Queue(maxsize=2)
    stop = threading.Event()
    producer = threading.Thread(target=_produce, args=(batches, out, stop), daemon=True)
    producer.start()
    try:
        while (item := out.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while producer.is_alive():  # an aborted write: unblock the producer's put
            with contextlib.suppress(queue.Empty):
                out.get(timeout=0.1)
        producer.join()


def write_rows(
    db: Database,
    columns: Sequence[str],
    batches: Iterator[list[tuple[Any, ...]]],
    finish: Callable[[Connection], None],
) -> None:
    """Insert every batch into ``annotations``, then ``finish(conn)``, all in one
    transaction: an exception from ``batches`` (a bad feature) leaves nothing behind."""
    names = ", ".join(columns)
    with db.engine.begin() as conn:
        driver: Any = conn.connection.driver_connection
        if db.dialect == "postgresql":
            with driver.cursor() as cur, cur.copy(f"COPY annotations ({names}) FROM STDIN") as cp:
                for rows in _prefetched(batches):
                    for row in rows:
                        cp.write_row(row)
        else:
            sql = f"INSERT INTO annotations ({names}) VALUES ({', '.join('?' * len(columns))})"
            cur = driver.cursor()
            (old_cache,) = cur.execute("PRAGMA cache_size").fetchone()
            cur.execute(f"PRAGMA cache_size = -{_SQLITE_CACHE_KIB}")
            try:
                for rows in _prefetched(batches):
                    cur.executemany(sql, rows)
            finally:
                cur.execute(f"PRAGMA cache_size = {int(old_cache)}")
                cur.close()
        finish(conn)

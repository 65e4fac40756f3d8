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
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from share.db import Database

__all__ = ["WriteStats", "write_rows"]

_DONE = object()
_SQLITE_CACHE_KIB = 64 * 1024  # the (slide_id, cell) index gets random inserts: keep it hot


@dataclass
class WriteStats:
    """CPU seconds of each thread and the writer's wait for batches: which side bounds an
    import (logged by the import, read by the benchmark)."""

    prepare_cpu_s: float = 0.0
    write_cpu_s: float = 0.0
    write_wait_s: float = 0.0


def _produce(
    batches: Iterator[list[tuple[Any, ...]]],
    out: queue.Queue[Any],
    stop: threading.Event,
    stats: WriteStats,
) -> None:
    start = time.thread_time()
    try:
        for rows in batches:
            if stop.is_set():
                return
            out.put(rows)
        out.put(_DONE)
    except BaseException as exc:  # handed to the writer, which raises it and rolls back
        out.put(exc)
    finally:
        stats.prepare_cpu_s = time.thread_time() - start


def _prefetched(
    batches: Iterator[list[tuple[Any, ...]]], stats: WriteStats
) -> Iterator[list[tuple[Any, ...]]]:
    out: queue.Queue[Any] = queue.Queue(maxsize=2)
    stop = threading.Event()
    producer = threading.Thread(target=_produce, args=(batches, out, stop, stats), daemon=True)
    producer.start()
    try:
        while True:
            waited = time.perf_counter()
            item = out.get()
            stats.write_wait_s += time.perf_counter() - waited
            if item is _DONE:
                break
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
) -> WriteStats:
    """Insert every batch into ``annotations``, then ``finish(conn)``, all in one
    transaction: an exception from ``batches`` (a bad feature) leaves nothing behind."""
    names = ", ".join(columns)
    stats = WriteStats()
    start = time.thread_time()
    with db.engine.begin() as conn:
        driver: Any = conn.connection.driver_connection
        if db.dialect == "postgresql":
            with driver.cursor() as cur, cur.copy(f"COPY annotations ({names}) FROM STDIN") as cp:
                for rows in _prefetched(batches, stats):
                    for row in rows:
                        cp.write_row(row)
        else:
            sql = f"INSERT INTO annotations ({names}) VALUES ({', '.join('?' * len(columns))})"
            cur = driver.cursor()
            (old_cache,) = cur.execute("PRAGMA cache_size").fetchone()
            cur.execute(f"PRAGMA cache_size = -{_SQLITE_CACHE_KIB}")
            try:
                for rows in _prefetched(batches, stats):
                    cur.executemany(sql, rows)
            finally:
                cur.execute(f"PRAGMA cache_size = {int(old_cache)}")
                cur.close()
        finish(conn)
    stats.write_cpu_s = time.thread_time() - start  # the commit included
    return stats

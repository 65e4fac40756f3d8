"""Annotations at scale: import 10^6 polygons from QuPath GeoJSON, then viewport queries.

Targets (issue 5): import <= 20 s, viewport query p99 <= 50 ms at 10^6 polygons. The baseline
run alongside is the same viewport query without the spatial index (a full scan of the bbox
columns), to show what the spatial index (``share/spatial.py``) buys.

    python -m benchmarks.bench_annotations [--n 1000000] [--queries 500] [--write]
    python -m benchmarks.bench_annotations --pg-temp   # on a throwaway PostgreSQL 15 cluster

Fixed inputs: seeded nuclei-like heptagons (~12 px) on a 100,000 x 100,000 px slide, SQLite
file in a temporary directory (the embedded default). ``--write`` updates the "Annotations"
section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import os
import random
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import text

from benchmarks._pg_temp import temp_cluster
from share import annotations as store
from share.accounts import Accounts
from share.config import ShareSettings
from share.db import open_database

SLIDE_PX = 100_000
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def _feature(rng: random.Random, i: int) -> dict[str, Any]:
    cx, cy, r = rng.uniform(0, SLIDE_PX), rng.uniform(0, SLIDE_PX), rng.uniform(4, 8)
    ring = [
        [
            round(cx + r * math.cos(k * 2 * math.pi / 7), 1),
            round(cy + r * math.sin(k * 2 * math.pi / 7), 1),
        ]
        for k in range(7)
    ]
    ring.append(ring[0])
    return {
        "type": "Feature",
        "id": f"n{i}",
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": {
            "objectType": "detection",
            "classification": {
                "name": "Tumor" if i % 3 else "Stroma",
                "color": [200, 0, 0] if i % 3 else [0, 150, 0],
            },
        },
    }


def make_collection(n: int, seed: int = 0) -> dict[str, Any]:
    rng = random.Random(seed)
    return {"type": "FeatureCollection", "features": [_feature(rng, i) for i in range(n)]}


def make_body(n: int, seed: int = 0) -> bytes:
    """``make_collection(n)`` as JSON text, written feature by feature (the benchmark's own
    memory stays the body's size, so that the import's peak RSS can be read apart)."""
    rng = random.Random(seed)
    out = bytearray(b'{"type": "FeatureCollection", "features": [')
    for i in range(n):
        out += (", " if i else "").encode() + json.dumps(_feature(rng, i)).encode()
    out += b"]}"
    return bytes(out)


@contextmanager
def _import_log() -> Iterator[dict[str, float]]:
    """The import's own CPU split (preparing batches, writing them), from its INFO line."""
    found: dict[str, float] = {}

    class Grab(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.msg.startswith("imported"):
                args: Any = record.args
                _, found["prepare_cpu_s"], found["write_cpu_s"] = args

    log = logging.getLogger("share.annotations")
    handler, level = Grab(), log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield found
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


def _reset_peak_rss() -> None:
    # Linux: writing 5 to clear_refs resets VmHWM, the peak RSS read back by _peak_rss_mb.
    Path("/proc/self/clear_refs").write_text("5")


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(
    n: int,
    queries: int,
    view_px: int,
    reuse: Path | None = None,
    export: bool = True,
    db_url: str = "",
) -> dict[str, Any]:
    tmp = reuse.parent if reuse is not None else Path(tempfile.mkdtemp(prefix="bench-ann-"))
    settings = ShareSettings(
        data_dir=tmp,
        database_url=f"sqlite:///{reuse}" if reuse is not None else db_url,
        argon2_time_cost=1,
        argon2_memory_kib=1024,
    )
    db = open_database(settings.url)
    accounts = Accounts(db, settings)
    accounts.ensure_centres()
    if reuse is None:
        p = accounts.add_user("bench", "caen", "pathologist", "bench-password")
        accounts.register_slides([("slide", "bench")])
    else:
        p = accounts.principal("bench")
    slide = accounts.slide("slide")
    assert slide is not None
    t_import = cpu_import = body_mb = import_rss = load_at_import = float("nan")
    import_split: dict[str, float] = {}
    count = n
    if reuse is None:
        raw = make_body(n)
        body_mb = len(raw) / 1e6
        gc.collect()
        _reset_peak_rss()
        load_at_import = os.getloadavg()[0]
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        with _import_log() as stats:
            count = store.import_geojson(
                db, p, slide, raw, limits=store.Limits(max_features=max(n, 1))
            )
        t_import = time.perf_counter() - t0
        cpu_import = time.process_time() - cpu0
        import_rss = _peak_rss_mb()
        import_split = stats
        del raw
    rng = random.Random(1)
    timings, base_timings, returned = [], [], []
    for q in range(queries):
        x, y = rng.uniform(0, SLIDE_PX - view_px), rng.uniform(0, SLIDE_PX - view_px)
        t = time.perf_counter()
        out = store.query_viewport(db, p, slide, store.Viewport(x, y, view_px, view_px))
        timings.append(time.perf_counter() - t)
        returned.append(out.count('"type":"Feature"'))
        if q < max(5, queries // 50):  # the baseline is slow: a few runs are enough
            t = time.perf_counter()
            with db.engine.connect() as conn:
                conn.execute(
                    text(
                        "SELECT * FROM annotations WHERE min_x <= :x1 AND max_x >= :x0 "
                        "AND min_y <= :y1 AND max_y >= :y0 AND slide_id = 'slide' LIMIT 5001"
                    ),
                    {"x0": x, "y0": y, "x1": x + view_px, "y1": y + view_px},
                ).all()
            base_timings.append(time.perf_counter() - t)
    export_t = time.perf_counter()
    size = sum(len(chunk) for chunk in store.export_geojson(db, p, slide)) if export else 0
    t_export = time.perf_counter() - export_t
    if db.dialect == "postgresql":
        with db.engine.connect() as conn:
            db_bytes = conn.scalar(text("SELECT pg_total_relation_size('annotations')"))
    else:
        db_bytes = sum(f.stat().st_size for f in tmp.iterdir())
    db.dispose()
    return {
        "n": count,
        "body_mb": body_mb,
        "import_s": t_import,
        "import_cpu_s": cpu_import,
        **import_split,
        "db_mb": db_bytes / 1e6,
        "view_px": view_px,
        "features_per_view": statistics.median(returned),
        "q_p50_ms": 1e3 * statistics.median(timings),
        "q_p95_ms": 1e3 * pct(timings, 0.95),
        "q_p99_ms": 1e3 * pct(timings, 0.99),
        "scan_p50_ms": 1e3 * statistics.median(base_timings),
        "export_s": t_export,
        "export_mb": size / 1e6,
        "import_peak_rss_mb": import_rss,
        "load_avg_import": load_at_import,
        "load_avg": os.getloadavg()[0],
        "database": db.dialect,
        "cpus": os.cpu_count(),
    }


def write_results(r: dict[str, Any]) -> None:
    import_cell = (
        f"{r['import_s']:.1f} s wall ({r['import_cpu_s']:.1f} s CPU, both threads;"
        f" body {r['body_mb']:.0f} MB)"
    )
    query_cell = (
        f"p50 {r['q_p50_ms']:.1f} ms, p95 {r['q_p95_ms']:.1f} ms, p99 {r['q_p99_ms']:.1f} ms"
    )
    speedup = r["scan_p50_ms"] / r["q_p50_ms"]
    rows = [
        f"| import {r['n']:,} polygons from QuPath GeoJSON | {import_cell} | <= 20 s |",
        f"| viewport {r['view_px']} px square, median {r['features_per_view']:.0f} features"
        f" | {query_cell} | p99 <= 50 ms |",
        f"| same query without the spatial index (baseline) | p50 {r['scan_p50_ms']:.0f} ms"
        f" ({speedup:.0f}x slower) | |",
        f"| export all as GeoJSON | {r['export_s']:.1f} s, {r['export_mb']:.0f} MB | |",
        f"| database size | {r['db_mb']:.0f} MB | |",
        f"| peak RSS during the import (body included) | {r['import_peak_rss_mb']:.0f} MB | |",
    ]
    section = (
        "## Annotations\n\n"
        f"`python -m benchmarks.bench_annotations --n {r['n']} --write` (SQLite WAL, grid index;"
        f" {r['cpus']} CPUs, load average {r['load_avg']:.1f} while running: shared machine).\n\n"
        "| measure | value | target |\n|---|---|---|\n" + "\n".join(rows) + "\n"
    )
    old = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    start = old.find("## Annotations")
    if start < 0:
        RESULTS.write_text(old.rstrip() + "\n\n" + section)
        return
    end = old.find("\n## ", start + 1)  # replaced in place, the other sections kept in order
    RESULTS.write_text(old[:start] + section + (old[end:] if end >= 0 else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--view-px", type=int, default=2048)
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--reuse", type=Path, help="query an iain.db a previous run imported")
    parser.add_argument("--no-export", action="store_true")
    parser.add_argument("--db-url", default="", help="e.g. postgresql+psycopg://... (SQLite)")
    parser.add_argument(
        "--pg-temp", action="store_true", help="on a throwaway PostgreSQL 15 cluster in /tmp"
    )
    args = parser.parse_args()
    with temp_cluster() if args.pg_temp else nullcontext(args.db_url) as url:
        result = run(args.n, args.queries, args.view_px, args.reuse, not args.no_export, url)
    for key, value in result.items():
        print(f"{key:>18}: {value:.2f}" if isinstance(value, float) else f"{key:>18}: {value}")
    if args.write:
        write_results(result)


if __name__ == "__main__":
    main()

"""Cost of the owner centre's access review over a long audit trail.

Fills a SQLite trail (WAL, as deployed) with N slide-view records spread over S slides, read by
users of the three centres (peers as ``user@node`` with their share), then times the two review
queries in process: the per-centre slide list (aggregated in SQL) and one slide's accesses
(newest 5,000). Baseline alongside: the audit export of the same slide (``audit.records``).

    python -m benchmarks.bench_review [--records 50000] [--slides 200] [--runs 15]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from share import audit
from share.accounts import Accounts
from share.authz import Principal, Role
from share.config import ShareSettings
from share.db import open_database
from share.review import AccessReview
from share.shares import DbShareRegistry


def _fill(accounts: Accounts, records: int, slides: int) -> None:
    """Write the records with the real hash chain, in batches of one transaction each."""
    batch = 5000
    for start in range(0, records, batch):
        with accounts.db.session() as s:
            for i in range(start, min(records, start + batch)):
                peer = ("rouen", "lille")[i % 2]
                detail: dict[str, Any] = {
                    "session": "x" * 12,
                    "since": "2026-11-23T10:00:00+00:00",
                    "tiles": 12,
                    "regions": {"0": [i % 40, i % 30, i % 40 + 3, i % 30 + 2]},
                }
                actor = "caen-patho"
                if i % 3:
                    detail |= {"peer": peer, "share": f"share-{i % slides}-{peer}"}
                    actor = f"dr.{i % 17}@{peer}"
                audit.append(
                    s,
                    actor=actor,
                    action="slide.view",
                    centre_id="caen",
                    slide_id=f"slide-{i % slides:04d}",
                    detail=detail,
                )


def _time(fn: Callable[[], object], runs: int) -> tuple[float, float]:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return statistics.median(times), times[max(0, int(len(times) * 0.95) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--slides", type=int, default=200)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-review-"))
    settings = ShareSettings(data_dir=tmp, argon2_time_cost=1, argon2_memory_kib=1024)
    db = open_database(settings.url)
    accounts = Accounts(db, settings)
    accounts.ensure_centres()
    admin = accounts.add_user("caen-admin", "caen", "admin", "bench-password")
    accounts.add_user("caen-patho", "caen", "pathologist", "bench-password")
    accounts.register_slides([(f"slide-{i:04d}", f"S{i}") for i in range(args.slides)])
    t0 = time.perf_counter()
    _fill(accounts, args.records, args.slides)
    fill_s = time.perf_counter() - t0
    review = AccessReview(accounts, DbShareRegistry(db))
    who = Principal(admin.user_id, "caen-admin", "caen", Role.ADMIN)
    listing = review.slides(who)
    one = review.slide(who, "slide-0007")
    assert sum(s["accesses"] for s in listing) == args.records
    assert set().union(*(s["centres"] for s in listing)) == {"caen", "lille", "rouen"}
    per_slide = args.records // args.slides
    results = {
        "records": args.records,
        "slides": args.slides,
        "fill_s": round(fill_s, 1),
        "slide_list_ms": _time(lambda: review.slides(who), args.runs),
        "one_slide_ms": _time(lambda: review.slide(who, "slide-0007"), args.runs),
        "one_slide_accesses": len(one["accesses"]),
        "baseline_audit_export_one_slide_ms": _time(
            lambda: audit.records(db, centre_id="caen", slide_id="slide-0007"), args.runs
        ),
        "expected_per_slide": per_slide,
    }
    print(json.dumps(results, indent=1))
    db.dispose()


if __name__ == "__main__":
    main()

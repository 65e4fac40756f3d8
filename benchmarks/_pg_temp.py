"""A throwaway PostgreSQL 15 cluster in a temporary directory for the benchmarks, started
from Debian's binaries like tests/share/conftest.py does, but with the server's default
settings (fsync on: the figures are for a durable database), and removed afterwards."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

PG_BIN = Path(os.environ.get("IAIN_PG_BIN", "/usr/lib/postgresql/15/bin"))


def _as_postgres(cmd: list[str]) -> list[str]:
    # initdb refuses to run as root; the Debian package ships the postgres user.
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@contextmanager
def temp_cluster(database: str = "bench") -> Iterator[str]:
    """Yield a SQLAlchemy URL of an empty database on a fresh cluster (unix socket only)."""
    root = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    data = root / "data"
    ctl = [str(PG_BIN / "pg_ctl"), "-D", str(data)]
    try:
        subprocess.run(
            _as_postgres([str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "iain"]),
            check=True,
            capture_output=True,
        )
        opts = f"-k {root} -c listen_addresses=''"
        subprocess.run(
            _as_postgres([*ctl, "-o", opts, "-w", "-l", str(root / "log"), "start"]),
            check=True,
            capture_output=True,
        )
        with psycopg.connect(f"host={root} user=iain dbname=postgres", autocommit=True) as c:
            c.execute(f"CREATE DATABASE {database}".encode())
        yield f"postgresql+psycopg://iain@/{database}?host={root}"
    finally:
        subprocess.run(_as_postgres([*ctl, "-m", "fast", "stop"]), capture_output=True)
        shutil.rmtree(root, ignore_errors=True)

"""Fixtures of the share tests: a real PostgreSQL 15 started in a temporary directory, SQLite
files, and a small FastAPI app with tile-like routes that call the slide access hook.

Every test that takes ``db`` runs twice, on SQLite (WAL) and on PostgreSQL.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response

from share.accounts import Accounts
from share.authz import Action
from share.config import ShareSettings
from share.db import Database, open_database
from share.router import install_share
from share.web import CSRF_HEADER, install_error_handlers

PG_BIN = Path(os.environ.get("IAIN_PG_BIN", "/usr/lib/postgresql/15/bin"))
_counter = itertools.count()


@dataclass(frozen=True)
class PgServer:
    socket_dir: Path

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://iain@/{database}?host={self.socket_dir}"


def _as_postgres(cmd: list[str]) -> list[str]:
    # initdb refuses to run as root; the Debian package ships the postgres user.
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"PostgreSQL binaries not found in {PG_BIN} (apt-get install postgresql-15)")
    # Not under pytest's tmp dir: that is 0700 root, which the postgres user cannot traverse.
    root = Path(tempfile.mkdtemp(prefix="iain-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    data = root / "data"
    init = subprocess.run(
        _as_postgres(
            [str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "iain", "--no-sync"]
        ),
        capture_output=True,
        text=True,
    )
    if init.returncode != 0:
        pytest.fail(f"initdb failed: {init.stderr.strip()[-500:]}")
    opts = f"-k {root} -c listen_addresses='' -F -c max_connections=200"
    subprocess.run(
        _as_postgres(
            [
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(data),
                "-o",
                opts,
                "-w",
                "-l",
                str(root / "log"),
                "start",
            ]
        ),
        check=True,
        capture_output=True,
    )
    try:
        server = PgServer(root)
        # Migrate once into a template; each test copies it (CREATE DATABASE ... TEMPLATE).
        _psql(server, "CREATE DATABASE iain_template")
        open_database(server.url("iain_template")).dispose()
        yield server
    finally:
        subprocess.run(
            _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
            check=False,
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)


def _psql(server: PgServer, sql: str) -> None:
    with psycopg.connect(f"host={server.socket_dir} user=iain dbname=postgres") as conn:
        conn.autocommit = True
        conn.execute(sql.encode())


def create_pg_database(server: PgServer) -> str:
    name = f"t{os.getpid()}_{next(_counter)}"
    _psql(server, f"CREATE DATABASE {name} TEMPLATE iain_template")
    return server.url(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'iain.db'}"
    return create_pg_database(request.getfixturevalue("pg_server"))


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = open_database(db_url)
    yield database
    database.dispose()


@pytest.fixture
def settings(tmp_path: Path) -> ShareSettings:
    # Cheap argon2 so that logins cost microseconds in tests; production keeps the defaults.
    return ShareSettings(data_dir=tmp_path, argon2_time_cost=1, argon2_memory_kib=1024)


@pytest.fixture
def accounts(db: Database, settings: ShareSettings) -> Accounts:
    acc = Accounts(db, settings)
    acc.ensure_centres()
    return acc


def make_app(settings: ShareSettings, db: Database) -> FastAPI:
    """A stand-in for create_app: the share wiring plus routes shaped like the tile server's."""
    app = FastAPI()
    install_error_handlers(app)
    install_share(app, settings, db)

    @app.get("/healthz")
    def healthz() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/slides/{slide_id}/tiles/{level}/{col}/{row}")
    def tile(request: Request, slide_id: str, level: int, col: int, row: int) -> Response:
        request.app.state.slide_access(request, slide_id)
        return Response(b"jpeg-bytes", media_type="image/jpeg")

    @app.get("/slides/{slide_id}/associated/{name}")
    def associated(request: Request, slide_id: str, name: str) -> Response:
        request.app.state.slide_access(request, slide_id, Action.SLIDE_ASSOCIATED)
        return Response(b"png-bytes", media_type="image/png")

    @app.get("/viewer/{slide_id}", response_class=HTMLResponse)
    def viewer_page(request: Request, slide_id: str) -> str:
        request.app.state.slide_access(request, slide_id)
        return "<html>viewer</html>"

    return app


@pytest.fixture
def app(accounts: Accounts, settings: ShareSettings) -> FastAPI:
    return make_app(settings, accounts.db)


class LiveServer:
    """A real uvicorn serving ``app`` on 127.0.0.1 (ephemeral port) in a thread."""

    def __init__(self, app: FastAPI, port: int = 0) -> None:
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", lifespan="on",
            proxy_headers=False,  # as viewer/serve.py: the app reads X-Forwarded-For itself
        )  # fmt: skip
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.005)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def base_url(app: FastAPI) -> Iterator[str]:
    with LiveServer(app) as url:
        yield url


@pytest.fixture
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=10) as c:
        yield c


@pytest.fixture
def new_client(base_url: str) -> Iterator[Callable[[], httpx.Client]]:
    """Factory of extra cookie jars (one per browser) on the same server."""
    made: list[httpx.Client] = []

    def make() -> httpx.Client:
        c = httpx.Client(base_url=base_url, timeout=10)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


@pytest.fixture
def people(accounts: Accounts) -> dict[str, str]:
    """One user per (role, centre) that matters, password = name + '-password'."""
    users = {
        "caen-patho": ("caen", "pathologist"),
        "caen-patho2": ("caen", "pathologist"),
        "lille-patho": ("lille", "pathologist"),
        "caen-admin": ("caen", "admin"),
        "lille-admin": ("lille", "admin"),
        "caen-ml": ("caen", "ml"),
        "caen-operator": ("caen", "operator"),
    }
    for name, (centre, role) in users.items():
        accounts.add_user(name, centre, role, f"{name}-password")
    accounts.register_slides([("s-caen", "PATIENT-CAEN-001"), ("s-caen-2", "PATIENT-CAEN-002")])
    accounts.register_slides([("s-lille", "PATIENT-LILLE-001")], centre="lille")
    return {name: f"{name}-password" for name in users}


def login(client: httpx.Client, username: str, password: str | None = None) -> dict[str, str]:
    """Log ``client`` in; returns headers carrying the CSRF token for state-changing calls."""
    response = client.post(
        "/api/login", json={"username": username, "password": password or f"{username}-password"}
    )
    assert response.status_code == 200, response.text
    return {CSRF_HEADER: response.json()["csrf_token"]}


def settings_with(settings: ShareSettings, **changes: object) -> ShareSettings:
    return replace(settings, **changes)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def chromium(shared_browser: Any) -> Any:
    """Debian's chromium through Playwright: the session's one browser (tests/conftest.py)."""
    return shared_browser

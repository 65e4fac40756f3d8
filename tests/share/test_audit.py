"""Audit trail: hash chain, tamper detection, views aggregated per session, admin export."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import Callable

import httpx
import pytest
from sqlalchemy import text

from share import audit
from share.accounts import Accounts
from share.db import Database
from share.errors import AuditChainError
from tests.share.conftest import login


def _append_three(db: Database) -> None:
    with db.session() as s:
        audit.append(s, actor="a", action="login", detail={"ip": "1"})
        audit.append(s, actor="b", action="slide.view", centre_id="caen", slide_id="s1")
        audit.append(s, actor="c", action="annotation.update", centre_id="caen", slide_id="s1")


def _drop_append_only_guard(db: Database) -> None:
    """What an attacker with DB access would do first."""
    with db.engine.begin() as conn:
        if db.dialect == "postgresql":
            conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only"))
        else:
            conn.execute(text("DROP TRIGGER audit_log_no_update"))
            conn.execute(text("DROP TRIGGER audit_log_no_delete"))


def test_chain_verifies(db: Database) -> None:
    _append_three(db)
    assert audit.verify(db).records == 3


def test_table_is_append_only(db: Database) -> None:
    _append_three(db)
    for sql in ("UPDATE audit_log SET actor = 'x' WHERE seq = 2", "DELETE FROM audit_log"):
        with pytest.raises(Exception, match="append-only"), db.engine.begin() as conn:
            conn.execute(text(sql))
    assert audit.verify(db).records == 3


def test_modified_row_is_named(db: Database) -> None:
    _append_three(db)
    _drop_append_only_guard(db)
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE audit_log SET actor = 'mallory' WHERE seq = 2"))
    with pytest.raises(AuditChainError, match=r"audit record 2 \(slide.view by mallory\)"):
        audit.verify(db)


def test_rehashed_row_breaks_the_next_link(db: Database) -> None:
    _append_three(db)
    _drop_append_only_guard(db)
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE audit_log SET hash = :h WHERE seq = 2"), {"h": "f" * 64})
    with pytest.raises(AuditChainError, match="audit record 2"):
        audit.verify(db)


@pytest.mark.parametrize("seq", [2, 3])
def test_deleted_row_is_detected(db: Database, seq: int) -> None:
    _append_three(db)
    _drop_append_only_guard(db)
    with db.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE seq = :s"), {"s": seq})
    with pytest.raises(AuditChainError, match=r"missing|removed"):
        audit.verify(db)


def test_cli_verify_reports_tampering(db: Database, capsys: pytest.CaptureFixture[str]) -> None:
    from viewer.cli import main

    _append_three(db)
    url = db.engine.url.render_as_string(hide_password=False)
    assert main(["audit", "verify", "--db", url]) == 0
    assert "intact: 3 records" in capsys.readouterr().out
    _drop_append_only_guard(db)
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE audit_log SET detail = '{}' WHERE seq = 1"))
    assert main(["audit", "verify", "--db", url]) == 1
    err = capsys.readouterr().err
    assert "audit record 1 (login by a) was modified" in err and "Traceback" not in err


def test_views_aggregated_per_session_and_admin_export(
    new_client: Callable[[], httpx.Client], accounts: Accounts, people: dict[str, str]
) -> None:
    patho, admin, other_admin = new_client(), new_client(), new_client()
    login(patho, "caen-patho")
    for col in range(4):
        for row in range(3):
            assert patho.get(f"/slides/s-caen/tiles/2/{col}/{row}").status_code == 200
    assert patho.get("/slides/s-caen/tiles/0/10/11").status_code == 200
    assert patho.get("/slides/s-lille/tiles/0/0/0").status_code == 404  # failed access
    login(admin, "caen-admin")
    rows = admin.get("/api/audit", params={"slide_id": "s-caen"}).json()
    views = [r for r in rows if r["action"] == "slide.view"]
    assert len(views) == 1  # 13 tiles, one record
    assert views[0]["actor"] == "caen-patho"
    assert views[0]["detail"]["tiles"] == 13
    assert views[0]["detail"]["regions"] == {"0": [10, 11, 10, 11], "2": [0, 0, 3, 2]}
    # The denied access is in Lille's trail, seen by Lille's admin only.
    login(other_admin, "lille-admin")
    lille = other_admin.get("/api/audit").json()
    denied = [r for r in lille if r["outcome"] == "denied"]
    assert [(r["actor"], r["slide_id"]) for r in denied] == [("caen-patho", "s-lille")]
    caen_all = admin.get("/api/audit").json()
    assert not any(r["slide_id"] == "s-lille" for r in caen_all)
    assert any(r["action"] == "login" and r["actor"] == "caen-patho" for r in caen_all)
    # CSV export carries the same records.
    response = admin.get("/api/audit", params={"slide_id": "s-caen", "format": "csv"})
    assert response.headers["content-type"].startswith("text/csv")
    parsed = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["seq"] for r in parsed] == [str(r["seq"]) for r in rows]
    assert json.loads(parsed[-1]["detail"]) == rows[-1]["detail"]
    assert audit.verify(accounts.db).records >= 5


def test_logout_flushes_pending_views(
    new_client: Callable[[], httpx.Client], accounts: Accounts, people: dict[str, str]
) -> None:
    patho = new_client()
    headers = login(patho, "caen-patho")
    patho.get("/slides/s-caen/tiles/1/5/5")
    patho.post("/api/logout", headers=headers)
    rows = audit.records(accounts.db, centre_id="caen", slide_id="s-caen")
    assert [r["detail"]["regions"] for r in rows if r["action"] == "slide.view"] == [
        {"1": [5, 5, 5, 5]}
    ]


def test_bad_audit_queries_are_4xx(
    new_client: Callable[[], httpx.Client], people: dict[str, str]
) -> None:
    admin = new_client()
    login(admin, "caen-admin")
    assert admin.get("/api/audit", params={"format": "xml"}).status_code == 422
    assert admin.get("/api/audit", params={"slide_id": "x" * 500}).status_code == 422


def test_quiet_sessions_views_are_flushed_periodically(
    accounts: Accounts, people: dict[str, str]
) -> None:
    views = audit.ViewAggregator(accounts.db, flush_s=0.05)
    views.record("sid", "caen-patho", "caen", "s-caen", "3", 1, 2)

    async def run() -> None:
        task = asyncio.create_task(views.flush_periodically())
        await asyncio.sleep(0.5)
        task.cancel()

    asyncio.run(run())
    rows = audit.records(accounts.db, centre_id="caen", slide_id="s-caen")
    assert [r["detail"]["regions"] for r in rows] == [{"3": [1, 2, 1, 2]}]


def test_export_limit_keeps_the_newest_records(
    new_client: Callable[[], httpx.Client], accounts: Accounts, people: dict[str, str]
) -> None:
    with accounts.db.session() as s:
        for i in range(5):
            audit.append(s, actor=f"a{i}", action="slide.view", centre_id="caen", slide_id="s-caen")
    everything = audit.records(accounts.db, centre_id="caen", slide_id="s-caen")
    newest = audit.records(accounts.db, centre_id="caen", slide_id="s-caen", limit=2)
    assert [r["actor"] for r in newest] == ["a3", "a4"] == [r["actor"] for r in everything[-2:]]
    admin = new_client()
    login(admin, "caen-admin")
    response = admin.get("/api/audit", params={"slide_id": "s-caen", "limit": 3})
    assert [r["actor"] for r in response.json()] == ["a2", "a3", "a4"]
    assert response.headers["x-audit-truncated"] == "true"
    full = admin.get("/api/audit", params={"slide_id": "s-caen", "limit": 100})
    assert full.headers["x-audit-truncated"] == "false"
    assert [r["seq"] for r in full.json()] == sorted(r["seq"] for r in full.json())
    assert admin.get("/api/audit", params={"limit": 0}).status_code == 422
    views_only = audit.records(accounts.db, centre_id="caen", action_prefix="slide.")
    assert {r["action"] for r in views_only} == {"slide.view"}

"""Second opinions between two centres in one app (real uvicorn, SQLite and PostgreSQL).

Caen asks Lille; Lille sees the slide only through the share the request created, from send
to close; the requester gets an in-app notice and an e-mail through a real aiosmtpd server.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from share.accounts import Accounts
from share.opinions import Opinions
from tests.share.conftest import login
from tests.share.opinion_smtp import SmtpSink

TILE = "/slides/{}/tiles/0/0/0"


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    with SmtpSink() as sink:
        yield sink


@pytest.fixture
def opinions(app: FastAPI, smtp: SmtpSink, people: dict[str, str]) -> Opinions:
    service: Opinions = app.state.opinions
    service.notifier.mail = smtp.settings()
    for name in ("caen-patho", "lille-patho", "lille-admin"):
        service.notifier.set_email(name, f"{name}@chu.example")
    return service


def _draft(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "slide_ids": ["s-caen"],
        "regions": [{"slide_id": "s-caen", "x": 100, "y": 200, "w": 300, "h": 400}],
        "question": "Adenocarcinoma or reactive atypia? Family history noted.",
        "urgency": "urgent",
        "due_at": (datetime.now(UTC) + timedelta(days=2)).isoformat(),
        "consultant": {"centre": "lille", "username": "lille-patho"},
    }
    body.update(changes)
    return body


Clients = tuple[httpx.Client, dict[str, str], httpx.Client, dict[str, str]]


@pytest.fixture
def two(new_client: Callable[[], httpx.Client], opinions: Opinions) -> Clients:
    caen, lille = new_client(), new_client()
    return caen, login(caen, "caen-patho"), lille, login(lille, "lille-patho")


def test_full_state_machine_share_notice_mail_report(two: Clients, smtp: SmtpSink) -> None:
    caen, ch, lille, lh = two
    assert lille.get(TILE.format("s-caen")).status_code == 404
    r = caen.post("/api/opinions", json=_draft(), headers=ch)
    assert r.status_code == 201, r.text
    op = r.json()
    oid = op["id"]
    assert op["state"] == "draft" and op["regions"][0]["w"] == 300
    # A draft is the requester's alone: invisible to the consultant, and nothing shared yet.
    assert lille.get(f"/api/opinions/{oid}").status_code == 404
    assert lille.post(f"/api/opinions/{oid}/accept", headers=lh).status_code == 404
    assert lille.get(TILE.format("s-caen")).status_code == 404
    assert caen.post(f"/api/opinions/{oid}/accept", headers=ch).status_code == 403
    assert caen.post(f"/api/opinions/{oid}/send", headers=ch).json()["state"] == "sent"
    assert caen.post(f"/api/opinions/{oid}/send", headers=ch).status_code == 409
    # Sent: the consultant sees the request and the slide (pseudonymised, not its name).
    assert lille.get(TILE.format("s-caen")).status_code == 200
    assert lille.get(TILE.format("s-caen-2")).status_code == 404  # only the request's slides
    seen = lille.get(f"/api/opinions/{oid}").json()
    assert seen["role"] == "consultant" and seen["state"] == "sent"
    assert [o["id"] for o in lille.get("/api/opinions").json()] == [oid]
    answer = {"text": "Reactive atypia, no invasion.", "agreement": "partly"}
    r = lille.post(f"/api/opinions/{oid}/answer", json=answer, headers=lh)
    assert r.status_code == 409 and r.json()["error"] == "illegal_transition"
    assert lille.post(f"/api/opinions/{oid}/accept", headers=lh).json()["assignee"] == (
        "lille-patho"
    )
    assert lille.post(f"/api/opinions/{oid}/decline", json={}, headers=lh).status_code == 409
    answer["diagnosis"] = "reactive atypia"
    r = lille.post(f"/api/opinions/{oid}/answer", json=answer, headers=lh)
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "answered"
    assert r.json()["answer"]["agreement"] == "partly"

    notices = caen.get("/api/notifications").json()
    assert any("answered" in n["text"] and n["opinion_id"] == oid for n in notices)
    pseudonym = op["slides"][0]["pseudonym"]
    mails = smtp.wait_for("caen-patho@chu.example", "answered")
    assert pseudonym in mails[-1]
    for mail in smtp.messages:  # no PHI: no slide name, id, question or answer text
        assert "PATIENT" not in mail and "s-caen" not in mail
        assert "Family history" not in mail and "no invasion" not in mail

    report = caen.get(f"/api/opinions/{oid}/report.html")
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/html")
    text = report.text
    assert "Reactive atypia, no invasion." in text and pseudonym in text
    assert "PATIENT-CAEN-001" not in text and "s-caen" not in text
    for verb in ("create", "send", "accept", "answer"):
        assert f"opinion.{verb}" in text
    assert lille.get(f"/api/opinions/{oid}/report.html").status_code == 200

    assert lille.post(f"/api/opinions/{oid}/close", headers=lh).status_code == 403
    assert caen.post(f"/api/opinions/{oid}/close", headers=ch).json()["state"] == "closed"
    assert caen.post(f"/api/opinions/{oid}/close", headers=ch).status_code == 409
    assert lille.get(TILE.format("s-caen")).status_code == 404  # shares revoked on close


def test_pool_decline_and_revocation(
    two: Clients, new_client: Callable[[], httpx.Client], opinions: Opinions, accounts: Accounts
) -> None:
    caen, ch, lille, lh = two
    admin = new_client()
    ah = login(admin, "lille-admin")
    body = _draft(consultant={"centre": "lille"}, slide_ids=["s-caen", "s-caen-2"], regions=[])
    oid = caen.post("/api/opinions", json=body, headers=ch).json()["id"]
    caen.post(f"/api/opinions/{oid}/send", headers=ch)
    # Every clinician of the pool sees both slides until one accepts.
    for c in (lille, admin):
        assert c.get(TILE.format("s-caen-2")).status_code == 200
    shares = opinions.shares.for_opinion(oid)
    assert len(shares) == 2 and all(s.recipient.name == "pool" for s in shares)
    opinions.shares.revoke("caen-patho", shares[1].share_id)
    assert lille.get(TILE.format(shares[1].slide_id)).status_code == 404
    assert lille.get(TILE.format(shares[0].slide_id)).status_code == 200
    assert admin.post(f"/api/opinions/{oid}/accept", headers=ah).status_code == 200
    # Accepted by the admin: the other pool member can no longer act on it.
    assert lille.post(f"/api/opinions/{oid}/decline", json={}, headers=lh).status_code == 404
    assert admin.post(f"/api/opinions/{oid}/close", headers=ah).status_code == 403

    oid2 = caen.post("/api/opinions", json=body, headers=ch).json()["id"]
    caen.post(f"/api/opinions/{oid2}/send", headers=ch)
    r = lille.post(f"/api/opinions/{oid2}/decline", json={"reason": "on leave"}, headers=lh)
    assert r.json()["state"] == "declined"
    assert admin.get(TILE.format("s-caen-2")).status_code == 404  # decline revokes
    bad = lille.post(f"/api/opinions/{oid2}/answer", json={"text": "x", "agreement": "yes"})
    assert bad.status_code == 403  # no CSRF header
    r = lille.post(
        f"/api/opinions/{oid2}/answer", json={"text": "x", "agreement": "yes"}, headers=lh
    )
    assert r.status_code == 409  # declined is final for the consultant


def test_bad_input_and_roles(
    two: Clients, new_client: Callable[[], httpx.Client], opinions: Opinions
) -> None:
    caen, ch, _lille, _lh = two
    cases = [
        _draft(slide_ids=["s-lille"]),  # not the requester's centre
        _draft(slide_ids=["nope"]),
        _draft(regions=[{"slide_id": "s-caen-2", "x": 0, "y": 0, "w": 1, "h": 1}]),
        _draft(consultant={"centre": "lille", "username": "caen-patho2"}),
        _draft(consultant={"centre": "caen"}),  # own pool
        _draft(urgency="whenever"),
        _draft(regions=[{"slide_id": "s-caen", "x": 0, "y": 0, "w": 0, "h": 1}]),
        _draft(annotation_ids=[999]),
    ]
    for body in cases:
        r = caen.post("/api/opinions", json=body, headers=ch)
        assert r.status_code == 422, (body, r.text)
        assert "Traceback" not in r.text
    ml = new_client()
    mh = login(ml, "caen-ml")
    assert ml.post("/api/opinions", json=_draft(), headers=mh).status_code == 403
    assert caen.get("/api/opinions/12345").status_code == 404
    assert caen.get("/api/opinions/12345").json()["error"] == "opinion_not_found"


def test_reminders_when_late(two: Clients, opinions: Opinions, smtp: SmtpSink) -> None:
    caen, ch, lille, _lh = two
    due = datetime.now(UTC) - timedelta(hours=1)
    late = caen.post("/api/opinions", json=_draft(due_at=due.isoformat()), headers=ch).json()
    on_time = caen.post("/api/opinions", json=_draft(), headers=ch).json()
    for op in (late, on_time):
        caen.post(f"/api/opinions/{op['id']}/send", headers=ch)
    now = datetime.now(UTC)
    assert opinions.send_reminders(now) == 1
    assert opinions.send_reminders(now + timedelta(hours=1)) == 0  # once a day
    assert opinions.send_reminders(now + timedelta(hours=25)) == 1
    reminders = [n for n in lille.get("/api/notifications").json() if "Reminder" in n["text"]]
    assert len(reminders) == 2 and {n["opinion_id"] for n in reminders} == {late["id"]}
    smtp.wait_for("lille-patho@chu.example", "Reminder")
    thread = opinions.thread(opinions.accounts.principal("caen-patho"), late["id"])
    assert [r["action"] for r in thread].count("opinion.remind") == 2


def test_cli_remind(db_url: str, two: Clients, opinions: Opinions, smtp: SmtpSink) -> None:
    from viewer.cli import main

    caen, ch, _lille, _lh = two
    due = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    oid = caen.post("/api/opinions", json=_draft(due_at=due), headers=ch).json()["id"]
    caen.post(f"/api/opinions/{oid}/send", headers=ch)
    port = str(smtp.port)
    assert (
        main(
            ["opinions", "remind", "--db", db_url, "--smtp-host", "127.0.0.1", "--smtp-port", port]
        )
        == 0
    )
    smtp.wait_for("lille-patho@chu.example", "Reminder")
    rows = opinions.thread(opinions.accounts.principal("caen-patho"), oid)
    assert json.dumps([r["action"] for r in rows]).count("opinion.remind") == 1


def test_share_api_create_list_revoke(
    two: Clients, new_client: Callable[[], httpx.Client], opinions: Opinions
) -> None:
    caen, ch, lille, lh = two
    body = {
        "slide_id": "s-caen",
        "recipient": {"kind": "user", "centre": "lille", "name": "lille-patho"},
        "permission": "view",
        "expires_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
        "note": "teaching",
    }
    assert lille.get(TILE.format("s-caen")).status_code == 404
    r = caen.post("/api/shares", json=body, headers=ch)
    assert r.status_code == 201, r.text
    share = r.json()
    assert share["pseudonym"].startswith("SHR-") and share["revoked_at"] is None
    assert lille.get(TILE.format("s-caen")).status_code == 200
    assert lille.post("/api/shares", json=body, headers=lh).status_code == 404  # not Lille's
    past = body | {"expires_at": (datetime.now(UTC) - timedelta(hours=1)).isoformat()}
    assert caen.post("/api/shares", json=past, headers=ch).status_code == 422
    local = body | {"recipient": {"kind": "user", "centre": "caen", "name": "caen-patho2"}}
    assert caen.post("/api/shares", json=local, headers=ch).status_code == 422
    other = new_client()
    oh = login(other, "caen-patho2")
    sid = share["share_id"]
    assert other.post(f"/api/shares/{sid}/revoke", headers=oh).status_code == 403
    assert other.get("/api/shares").json() == []
    admin = new_client()
    login(admin, "caen-admin")
    assert [s["share_id"] for s in admin.get("/api/shares").json()] == [sid]
    assert lille.post(f"/api/shares/{sid}/revoke", headers=lh).status_code == 404
    r = caen.post(f"/api/shares/{sid}/revoke", headers=ch)
    assert r.status_code == 200 and r.json()["revoked_at"] is not None
    assert lille.get(TILE.format("s-caen")).status_code == 404

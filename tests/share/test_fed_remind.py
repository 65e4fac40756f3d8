"""Reminders of late second opinions reach a consultant at ANOTHER node (three real nodes).

Caen's ``iain opinions remind`` signs a notice to Lille's node (``POST /federation/opinion-
notices``); Lille notifies its own user in-app and by e-mail (a real SMTP server). A peer that
is down is retried on the next run; a forged notice, or one naming someone who is not a
clinician of Lille's own centre, notifies nobody.
"""

from __future__ import annotations

import json
from contextlib import closing
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from share.__main__ import main as iain
from share.accounts import Accounts
from share.audit import records
from share.config import ShareSettings
from share.db import open_database
from share.federation import FederationConfig, Peer
from share.models import User
from share.notify import Notifier
from share.opinion_models import NotificationRow, OpinionRow
from share.opinions import Opinions
from share.peers import HttpPeerClient
from share.shares import DbShareRegistry
from share.signing import NodeKey, sign_request
from tests.share.conftest_fed_nodes import FedNode, fed_nodes, fed_smtp
from tests.share.conftest_federation import CANARIES, CanarySlide, canary_slide, free_port
from tests.share.opinion_smtp import SmtpSink
from tests.share.test_fed_flow import ask_lille

__all__ = ["canary_slide", "fed_nodes", "fed_smtp"]  # fixtures used by name

NOTICES = "/federation/opinion-notices"
LILLE_MAIL = "lille-patho@chu-lille.example"


def _settings(node: FedNode) -> ShareSettings:
    return ShareSettings(data_dir=node.home, default_centre=node.name)


def _overdue(node: FedNode, oid: int) -> None:
    """Time passes: the request's due date is yesterday (written in Caen's own database)."""
    db = open_database(_settings(node).url)
    try:
        with db.session() as s:
            s.execute(
                update(OpinionRow)
                .where(OpinionRow.id == oid)
                .values(due_at=datetime.now(UTC) - timedelta(days=1))
            )
    finally:
        db.dispose()


def _last_reminder(node: FedNode, oid: int) -> datetime | None:
    db = open_database(_settings(node).url)
    try:
        with db.session() as s:
            return s.scalar(select(OpinionRow.last_reminder_at).where(OpinionRow.id == oid))
    finally:
        db.dispose()


def _notices(node: FedNode, user: str) -> list[dict[str, Any]]:
    client, _ = node.client(user)
    with closing(client):
        answer = client.get("/api/notifications")
        assert answer.status_code == 200, answer.text
        return list(answer.json())


def _post_notice(
    node: FedNode, key: NodeKey, body: dict[str, Any], *, tamper: bool = False
) -> httpx.Response:
    raw = json.dumps(body).encode()
    token = sign_request(key, "POST", NOTICES, node.name, "node", body=raw)
    sent = raw.replace(b"reminder", b"reminder ") if tamper else raw
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    return httpx.post(f"{node.url}{NOTICES}", content=sent, headers=headers, timeout=10)


def _notice(centre: str, username: str | None, oid: int = 7) -> dict[str, Any]:
    return {
        "opinion_id": oid,
        "kind": "reminder",
        "consultant": {"centre": centre, "username": username},
        "pseudonyms": ["SHR-0123456789ab"],
    }


def test_a_late_request_reminds_the_consultant_at_their_node(
    fed_nodes: dict[str, FedNode],
    fed_smtp: SmtpSink,
    canary_slide: CanarySlide,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caen, lille = fed_nodes["caen"], fed_nodes["lille"]
    lille_db = open_database(_settings(lille).url)
    try:
        Notifier(lille_db).set_email("lille-patho", LILLE_MAIL)
    finally:
        lille_db.dispose()
    request = ask_lille(fed_nodes, "late one")
    oid, pseudonym = request["id"], request["slides"][0]["pseudonym"]
    slide_id = request["slides"][0]["slide_id"]
    _overdue(caen, oid)
    before = len(_notices(lille, "lille-patho"))

    # Lille's node is down (a dead address): logged, nothing recorded, retried next run
    settings = _settings(caen)
    db = open_database(settings.url)
    try:
        accounts = Accounts(db, settings)
        opinions = Opinions(accounts, DbShareRegistry(db), Notifier(db))
        config = FederationConfig.from_file(str(caen.home / "peers.json"))
        dead = Peer("lille", f"http://127.0.0.1:{free_port()}", config.peers["lille"].public_key)
        key = NodeKey.from_file("caen", caen.home / "node.pem")
        with HttpPeerClient(key, dead, connect_timeout_s=0.5) as down:
            opinions.peers = {"lille": down}
            assert opinions.send_reminders() == 0
    finally:
        db.dispose()
    assert _last_reminder(caen, oid) is None
    assert len(_notices(lille, "lille-patho")) == before

    # the cron job, with the server's federation settings: Lille's user is told at Lille
    monkeypatch.setenv("SHARE_FEDERATION_FILE", str(caen.home / "peers.json"))
    monkeypatch.setenv("SHARE_NODE_KEY_FILE", str(caen.home / "node.pem"))
    monkeypatch.setenv("SHARE_DEFAULT_CENTRE", "caen")
    monkeypatch.delenv("SHARE_SMTP_HOST", raising=False)
    assert iain(["opinions", "remind", "--data", str(caen.home)]) == 0
    assert "1 overdue second-opinion requests reminded" in capsys.readouterr().out
    assert _last_reminder(caen, oid) is not None
    notices = _notices(lille, "lille-patho")
    assert len(notices) == before + 1
    text = notices[0]["text"]
    assert f"#{oid} from caen is overdue" in text and pseudonym in text
    mails = fed_smtp.wait_for(LILLE_MAIL, "overdue")
    (mail,) = [m for m in mails if f"#{oid}" in m and "overdue" in m]
    for leaked in (*CANARIES, slide_id, "late one"):
        assert leaked not in text and leaked not in mail
    assert _notices(lille, "lille-admin") == []  # a named consultant: not the whole pool
    db = open_database(settings.url)
    try:
        trail = records(db, centre_id="caen", action_prefix="opinion.remind")
    finally:
        db.dispose()
    assert [r["detail"]["opinion"] for r in trail] == [oid]

    # once a day: the next run finds nothing due
    assert iain(["opinions", "remind", "--data", str(caen.home)]) == 0
    assert "0 overdue" in capsys.readouterr().out
    assert len(_notices(lille, "lille-patho")) == before + 1


def test_a_forged_or_unsigned_notice_is_refused(fed_nodes: dict[str, FedNode]) -> None:
    lille = fed_nodes["lille"]
    before = _notices(lille, "lille-patho")
    body = _notice("lille", "lille-patho")
    unsigned = httpx.post(f"{lille.url}{NOTICES}", json=body, timeout=10)
    assert unsigned.status_code == 401
    assert _post_notice(lille, NodeKey.generate("caen"), body).status_code == 401  # not Caen's key
    caen_key = NodeKey.from_file("caen", fed_nodes["caen"].home / "node.pem")
    assert _post_notice(lille, caen_key, body, tamper=True).status_code == 401  # body changed
    assert _post_notice(lille, caen_key, {**body, "kind": "gossip"}).status_code == 422
    assert _post_notice(lille, caen_key, {**body, "text": "hi"}).status_code == 422
    assert _notices(lille, "lille-patho") == before


def test_a_notice_reaches_only_clinicians_of_the_nodes_own_centre(
    fed_nodes: dict[str, FedNode],
) -> None:
    lille = fed_nodes["lille"]
    db = open_database(_settings(lille).url)
    try:  # a local account of ANOTHER centre on Lille's node
        Accounts(db, _settings(lille)).add_user("caen-visitor", "caen", "pathologist", "x" * 12)
        caen_key = NodeKey.from_file("caen", fed_nodes["caen"].home / "node.pem")
        for centre, user in (("caen", "caen-visitor"), ("lille", "caen-visitor"), ("lille", "x")):
            answer = _post_notice(lille, caen_key, _notice(centre, user))
            assert answer.status_code == 200, answer.text
            assert answer.json() == {"notified": 0}
        with db.session() as s:
            vid = s.scalar(select(User.id).where(User.username == "caen-visitor"))
            told = s.scalars(select(NotificationRow).where(NotificationRow.user_id == vid))
            assert told.all() == []
    finally:
        db.dispose()
    ml_before = _notices(lille, "lille-ml")
    pool = _post_notice(lille, caen_key, _notice("lille", None, oid=8))
    assert pool.json() == {"notified": 2}  # lille-patho and lille-admin; never the ML engineer
    assert "#8 from caen" in _notices(lille, "lille-admin")[0]["text"]
    assert _notices(lille, "lille-ml") == ml_before


def test_an_accepted_pool_request_reminds_only_who_accepted_it(
    fed_nodes: dict[str, FedNode], monkeypatch: pytest.MonkeyPatch
) -> None:
    caen, lille = fed_nodes["caen"], fed_nodes["lille"]
    client, headers = caen.client("caen-patho")
    with closing(client):
        (slide,) = client.get("/api/slides").json()
        body = {
            "slide_ids": [slide["id"]],
            "question": "pool, please",
            "due_at": (datetime.now(UTC) + timedelta(days=2)).isoformat(),
            "consultant": {"centre": "lille"},
        }
        oid = client.post("/api/opinions", json=body, headers=headers).json()["id"]
        assert client.post(f"/api/opinions/{oid}/send", headers=headers).status_code == 200
    admin, ah = lille.client("lille-admin")
    with closing(admin):
        accepted = admin.post(f"/api/inbox/opinions/caen/{oid}/accept", headers=ah)
        assert accepted.status_code == 200, accepted.text
    _overdue(caen, oid)
    monkeypatch.setenv("SHARE_FEDERATION_FILE", str(caen.home / "peers.json"))
    monkeypatch.setenv("SHARE_NODE_KEY_FILE", str(caen.home / "node.pem"))
    monkeypatch.setenv("SHARE_DEFAULT_CENTRE", "caen")
    assert iain(["opinions", "remind", "--data", str(caen.home)]) == 0
    mark = f"#{oid} from caen is overdue"
    assert [n for n in _notices(lille, "lille-admin") if mark in n["text"]] != []
    assert [n for n in _notices(lille, "lille-patho") if mark in n["text"]] == []


def test_sending_a_request_tells_the_consultant_at_their_node(
    fed_nodes: dict[str, FedNode], canary_slide: CanarySlide
) -> None:
    lille = fed_nodes["lille"]
    before = len(_notices(lille, "lille-patho"))
    admin_before = _notices(lille, "lille-admin")
    request = ask_lille(fed_nodes, "new one")
    oid, pseudonym = request["id"], request["slides"][0]["pseudonym"]
    notices = _notices(lille, "lille-patho")
    assert len(notices) == before + 1
    text = notices[0]["text"]
    assert f"#{oid} requested by caen" in text and pseudonym in text
    for leaked in (*CANARIES, request["slides"][0]["slide_id"], "new one"):
        assert leaked not in text
    assert _notices(lille, "lille-admin") == admin_before  # a named consultant, not the pool

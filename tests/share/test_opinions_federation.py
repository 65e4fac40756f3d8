"""Federation wired into ``viewer.create_app`` (``SHARE_FEDERATION_FILE``), shares from the DB.

A second-opinion request sent from Caen to a Lille pathologist creates a row in ``shares``;
Lille's NODE (signed token) then finds it through ``/federation/shares``, until the request
is closed. ``/federation/*`` is outside the session middleware and answers 401 to anything
without a valid node token; ``/shared`` is behind the session and asks peers as that user.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from share import audit
from share.config import ShareSettings
from share.signing import NodeKey, sign_request
from share.web import flatten_routes
from tests.share.conftest import LiveServer, login
from tests.viewer.pyramids import synthetic_rgb, write_pyramid
from viewer.app import create_app
from viewer.config import ServerSettings

LILLE = NodeKey.generate("lille")


@dataclass(frozen=True)
class FedApp:
    url: str
    slide: str
    app: object


@pytest.fixture
def fed_app(tmp_path: Path, db_url: str) -> Iterator[FedApp]:
    data = tmp_path / "data"
    data.mkdir()
    write_pyramid(data / "caen-slide.zarr", synthetic_rgb(300, 200, seed=1), tile=256)
    caen = NodeKey.generate("caen")
    (tmp_path / "caen.pem").write_bytes(caen.private_pem())
    peers = {
        "node": "caen",
        "peers": [{"name": "lille", "url": free_port_url(), "public_key": LILLE.public_pem()}],
    }
    (tmp_path / "peers.json").write_text(json.dumps(peers))
    server = ServerSettings(data=str(data), cache_dir=str(tmp_path / "cache"), loop="asyncio")
    share = ShareSettings(
        data_dir=tmp_path,
        database_url=db_url,
        argon2_time_cost=1,
        argon2_memory_kib=1024,
        federation_file=str(tmp_path / "peers.json"),
        node_key_file=str(tmp_path / "caen.pem"),
    )
    app = create_app(server, share)
    with LiveServer(app) as url:
        accounts = app.state.accounts
        accounts.add_user("caen-patho", "caen", "pathologist", "caen-patho-password")
        (ref,) = [ref for ref, _ in accounts.slides()]
        yield FedApp(url, ref.slide_id, app)


def free_port_url() -> str:
    """A loopback URL nobody listens on: the peer is down."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _fill(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "0", path)


def test_every_route_needs_a_session_or_a_node_token(fed_app: FedApp) -> None:
    routes = flatten_routes(fed_app.app.routes)  # type: ignore[attr-defined]
    settings = fed_app.app.state.share_settings  # type: ignore[attr-defined]
    peer_routes = [(p, m) for p, m in routes if p.startswith("/federation/")]
    assert len(peer_routes) >= 4
    with httpx.Client(base_url=fed_app.url) as anon:
        for path, methods in routes:
            node_token = path.startswith("/federation/")
            if not node_token and (
                path in settings.public_paths or path.startswith(settings.public_prefixes)
            ):
                continue
            for method in sorted(methods - {"HEAD", "WEBSOCKET"}):
                r = anon.request(method, _fill(path), headers={"accept": "*/*"})
                assert r.status_code == 401, f"{method} {path} answered {r.status_code}"
                if node_token:  # refused by the node-token check, not the session middleware
                    assert "iain-federation" in r.headers["www-authenticate"]


def _peer_get(client: httpx.Client, path: str, user: str) -> httpx.Response:
    token = sign_request(LILLE, "GET", path, "caen", user)
    return client.get(path, headers={"authorization": f"Bearer {token}"})


def test_opinion_share_is_served_to_the_peer_node_until_closed(fed_app: FedApp) -> None:
    with (
        httpx.Client(base_url=fed_app.url, timeout=10) as caen,
        httpx.Client(base_url=fed_app.url, timeout=10) as peer,
    ):
        headers = login(caen, "caen-patho")
        body = {
            "slide_ids": [fed_app.slide],
            "question": "Second look please",
            "due_at": (datetime.now(UTC) + timedelta(days=1)).isoformat(),
            "consultant": {"centre": "lille", "username": "dr.lille"},
        }
        r = caen.post("/api/opinions", json=body, headers=headers)
        assert r.status_code == 201, r.text
        oid = r.json()["id"]
        assert _peer_get(peer, "/federation/shares", "dr.lille").json() == []
        caen.post(f"/api/opinions/{oid}/send", headers=headers)
        listed = _peer_get(peer, "/federation/shares", "dr.lille").json()
        assert len(listed) == 1
        assert listed[0]["pseudonym"] == r.json()["slides"][0]["pseudonym"]
        assert listed[0]["permission"] == "annotate"
        assert fed_app.slide not in json.dumps(listed)
        assert _peer_get(peer, "/federation/shares", "dr.other").json() == []
        share_id = listed[0]["share_id"]
        info = _peer_get(peer, f"/federation/shares/{share_id}", "dr.lille")
        assert info.status_code == 200, info.text
        assert info.json()["pseudonym"] == listed[0]["pseudonym"]
        assert (info.json()["width"], info.json()["height"]) == (300, 200)
        tile = _peer_get(peer, f"/federation/shares/{share_id}/tiles/0/0_0.jpeg", "dr.lille")
        assert tile.status_code == 200 and tile.content.startswith(b"\xff\xd8")
        derived = Path(fed_app.app.state.share_settings.data_dir) / "shared" / share_id  # type: ignore[attr-defined]
        assert derived.is_dir()
        # Recipient side: the session's user asks every peer (Lille is down: named, not 500).
        shared = caen.get("/shared").json()
        assert shared["slides"] == [] and [u["peer"] for u in shared["unavailable"]] == ["lille"]
        assert caen.post(f"/api/opinions/{oid}/close", headers=headers).status_code == 200
        assert _peer_get(peer, "/federation/shares", "dr.lille").json() == []
        assert not derived.exists()  # the derived copy goes with the share
        gone = _peer_get(peer, f"/federation/shares/{share_id}", "dr.lille")
        assert gone.status_code == 404
    accounts = fed_app.app.state.accounts  # type: ignore[attr-defined]
    fed_app.app.state.view_aggregator.flush()  # type: ignore[attr-defined]
    rows = audit.records(accounts.db, centre_id="caen")
    actions = [r["action"] for r in rows]
    assert any(r["actor"] == "dr.lille@lille" and r["slide_id"] == fed_app.slide for r in rows)
    assert "federation.list" in actions and "share.create" in actions
    assert "share.revoke" in actions and "federation.info" in actions

"""The app's lifespan closes its peers' HTTP clients (their keep-alive sockets) at shutdown."""

from __future__ import annotations

import json
from pathlib import Path

from starlette.testclient import TestClient

from share.config import ShareSettings
from share.peers import CachingPeerClient, HttpPeerClient
from share.signing import NodeKey
from tests.viewer.pyramids import synthetic_rgb, write_pyramid
from viewer.app import create_app
from viewer.config import ServerSettings


def test_shutdown_closes_every_peer_client(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    write_pyramid(data / "slide.zarr", synthetic_rgb(64, 64, seed=1), tile=64)
    (tmp_path / "caen.pem").write_bytes(NodeKey.generate("caen").private_pem())
    peers = [
        {"name": name, "url": f"http://127.0.0.1:{port}", "public_key": key.public_pem()}
        for name, port, key in (
            ("rouen", 9, NodeKey.generate("rouen")),
            ("lille", 9, NodeKey.generate("lille")),
        )
    ]
    (tmp_path / "peers.json").write_text(json.dumps({"node": "caen", "peers": peers}))
    share = ShareSettings(
        data_dir=tmp_path,
        argon2_time_cost=1,
        argon2_memory_kib=1024,
        federation_file=str(tmp_path / "peers.json"),
        node_key_file=str(tmp_path / "caen.pem"),
    )
    app = create_app(ServerSettings(data=str(data), cache_dir=str(tmp_path / "cache")), share)
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        clients = dict(app.state.federation_recipient.clients)
        inner = {name: c._inner for name, c in clients.items() if isinstance(c, CachingPeerClient)}
        assert sorted(inner) == ["lille", "rouen"]
        assert all(
            isinstance(c, HttpPeerClient) and not c._client.is_closed for c in inner.values()
        )
    assert all(isinstance(c, HttpPeerClient) and c._client.is_closed for c in inner.values())

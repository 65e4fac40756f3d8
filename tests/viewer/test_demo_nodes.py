"""``iain demo`` as three federated nodes: each node knows the two others (URL and key) and
accepts their signed requests; the converted slides are split between them; Caen stays :8000."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from share.demo_nodes import plan_nodes, write_node_configs
from share.federation import FederationConfig
from share.signing import NodeKey, sign_request
from viewer.__main__ import main
from viewer.app import create_app
from viewer.config import ServerSettings


def test_each_node_knows_the_two_others(tmp_path: Path) -> None:
    nodes = plan_nodes(tmp_path / "data")
    assert [(n.centre, n.url) for n in nodes] == [
        ("caen", "http://127.0.0.1:8000"),
        ("rouen", "http://127.0.0.1:8001"),
        ("lille", "http://127.0.0.1:8002"),
    ]
    write_node_configs(nodes)
    keys = {n.centre: NodeKey.from_file(n.centre, n.key_file) for n in nodes}
    for node in nodes:
        assert (node.key_file.stat().st_mode & 0o777) == 0o600
        config = FederationConfig.from_file(node.peers_file)
        assert config.node == node.centre
        others = {n.centre: n for n in nodes if n is not node}
        assert set(config.peers) == set(others)
        for name, peer in config.peers.items():
            assert peer.url == others[name].url
            assert peer.public_key.public_bytes_raw() == keys[name].public_key.public_bytes_raw()
    assert len({n.home for n in nodes}) == 3  # own folder, database, key each
    assert len({n.share_settings().url for n in nodes}) == 3
    write_node_configs(nodes)  # a second run keeps the keys (peers stay valid)
    again = NodeKey.from_file("caen", nodes[0].key_file)
    assert again.public_pem() == keys["caen"].public_pem()


def test_a_node_accepts_its_peers_signed_requests_only(tmp_path: Path) -> None:
    caen, rouen, lille = plan_nodes(tmp_path / "data")
    write_node_configs([caen, rouen, lille])
    server = ServerSettings(data=str(caen.slides), cache_dir=str(caen.home / "cache"))
    with TestClient(create_app(server, caen.share_settings())) as client:
        for peer in (rouen, lille):
            key = NodeKey.from_file(peer.centre, peer.key_file)
            token = sign_request(key, "GET", "/federation/shares", "caen", "someone")
            answer = client.get("/federation/shares", headers={"authorization": f"Bearer {token}"})
            assert answer.status_code == 200 and answer.json() == []
        stranger = sign_request(NodeKey.generate("rouen"), "GET", "/federation/shares", "caen", "x")
        refused = client.get("/federation/shares", headers={"authorization": f"Bearer {stranger}"})
        assert refused.status_code == 401
        assert client.get("/federation/shares").status_code == 401


def test_demo_splits_the_slides_over_three_nodes(
    slides_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    slides = tmp_path / "slides"
    slides.mkdir()
    for name in ("small.svs", "boxes.tiff"):
        (slides / name).symlink_to(slides_dir / name)
    data = tmp_path / "data"
    assert main(["demo", "--slides", str(slides), "--data", str(data), "--no-serve"]) == 0
    out = capsys.readouterr().out
    assert out.index("caen node http://127.0.0.1:8000/") < out.index("rouen node")
    assert "caen-admin" in out and "lille-admin" in out
    placed = {n.centre: sorted(p.name for p in n.slides.glob("*.zarr")) for n in plan_nodes(data)}
    assert placed == {"caen": ["boxes.zarr"], "rouen": ["small.zarr"], "lille": []}
    for node in plan_nodes(data):
        with sqlite3.connect(node.home / "iain.db") as db:
            centres = {c for (c,) in db.execute("SELECT centre_id FROM slides")}
            users = {u for (u,) in db.execute("SELECT username FROM users")}
        assert centres <= {node.centre} and len(centres) == len(placed[node.centre])
        assert f"{node.centre}-admin" in users
    # Single-node mode is still there: one database beside the pyramids, all centres in it.
    assert (
        main(["demo", "--slides", str(slides), "--data", str(data), "--no-serve", "--single-node"])
        == 0
    )
    with sqlite3.connect(data / "iain.db") as db:
        assert len(list(db.execute("SELECT slide_id FROM slides"))) == 2


def test_demo_serves_three_nodes_that_share_with_each_other(
    slides_dir: Path, tmp_path: Path
) -> None:
    """The real ``iain demo`` processes: Caen shares a slide with Lille's pool, Lille's
    pathologist reads its tile through Lille's node, Caen's admin sees the access."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import httpx

    from tests.conftest import REPO_ROOT

    slides = tmp_path / "slides"
    slides.mkdir()
    for name in ("CMU-1-Small-Region.svs", "small.svs"):
        (slides / name).symlink_to(slides_dir / name)
    base = 18_000 + os.getpid() % 1000 * 3
    command = [sys.executable, "-m", "viewer", "demo", "--slides", str(slides)]
    command += ["--data", str(tmp_path / "data"), "--port", str(base)]
    env = os.environ | {
        "PYTHONPATH": str(REPO_ROOT),
        "IAIN_SERVER": "uvicorn",
        "IAIN_LOOP": "asyncio",
    }
    log = (tmp_path / "demo.log").open("wb")
    demo = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=log)
    urls = [f"http://127.0.0.1:{base + i}" for i in range(3)]
    try:
        deadline = time.monotonic() + 120
        while not all(_up(url) for url in urls):
            assert demo.poll() is None, (tmp_path / "demo.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the three nodes did not start"
            time.sleep(0.5)
        with (
            httpx.Client(base_url=urls[0]) as caen,
            httpx.Client(base_url=urls[2]) as lille,
            httpx.Client(base_url=urls[0]) as admin,
        ):
            _share_and_read(caen, lille, admin)
    finally:
        demo.send_signal(signal.SIGINT)
        try:
            demo.wait(timeout=20)
        except subprocess.TimeoutExpired:
            demo.kill()
            demo.wait()
        log.close()
    # the logins are one block: no set-up log line falls inside it
    text = (tmp_path / "demo.log").read_text()
    block = text[text.index("demo logins") :].splitlines()[:12]
    assert block[1].startswith("  caen node") and block[-1].startswith("    lille-admin")
    assert not [line for line in block if "INFO" in line or "WARNING" in line]
    assert not any(_up(url) for url in urls)  # Ctrl-C stops all three


def _up(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _share_and_read(caen: Any, lille: Any, admin: Any) -> None:
    token = caen.post(
        "/api/login", json={"username": "caen-patho", "password": "demo-caen-patho"}
    ).json()["csrf_token"]
    (slide,) = [s for s in caen.get("/api/slides").json() if s["name"].startswith("CMU")]
    share = caen.post(
        "/api/shares",
        json={
            "slide_id": slide["id"],
            "recipient": {"kind": "group", "centre": "lille", "name": "pool"},
            "expires_at": "2099-01-01T00:00:00Z",
        },
        headers={"x-csrf-token": token},
    )
    assert share.status_code == 201, share.text
    lille.post("/api/login", json={"username": "lille-patho", "password": "demo-lille-patho"})
    (seen,) = lille.get("/shared").json()["slides"]
    assert seen["peer"] == "caen" and seen["pseudonym"] == share.json()["pseudonym"]
    tile = lille.get(f"/shared/caen/{seen['share_id']}/tiles/0/0_0.jpeg")
    assert tile.status_code == 200
    admin.post("/api/login", json={"username": "caen-admin", "password": "demo-caen-admin"})
    review = admin.get(f"/api/review/slides/{slide['id']}").json()
    views = [(a["user"], a["centre"]) for a in review["accesses"] if a["action"] == "slide.view"]
    assert views == [("lille-patho", "lille")]

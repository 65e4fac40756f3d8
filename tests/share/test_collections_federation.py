"""A Caen teaching collection read from Lille's node: two real apps (``create_app`` with
federation) on loopback, each with its own database and node key, knowing each other.

Lille's pathologist lists it through their own node, opens a pinned region in the tumour-board
view (tiles proxied by Lille from Caen's derived, de-identified pyramid) and nothing that
identifies the canary slide reaches Lille; Caen's admin sees the reads and the tile views.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import httpx
import pytest

from share import audit
from share.config import ShareSettings
from share.deidentify import SharedPyramidInfo
from share.signing import NodeKey
from tests.share.conftest import LiveServer, login
from tests.share.conftest_federation import (
    CANARIES,
    CANARY_FILE_NAME,
    CanarySlide,
    canary_slide,
    converted_canary,
    free_port,
)
from viewer.app import create_app
from viewer.config import ServerSettings

__all__ = ["canary_slide", "converted_canary"]  # fixtures used by name


@dataclass(frozen=True)
class Nodes:
    caen: str
    lille: str
    slide: str
    caen_app: Any


def _app(home: Path, name: str, key: NodeKey, peer: tuple[str, int, NodeKey]) -> Any:
    (home / "node.pem").write_bytes(key.private_pem())
    peer_name, port, peer_key = peer
    peers = {
        "node": name,
        "peers": [
            {
                "name": peer_name,
                "url": f"http://127.0.0.1:{port}",
                "public_key": peer_key.public_pem(),
            }
        ],
    }
    (home / "peers.json").write_text(json.dumps(peers))
    server = ServerSettings(
        data=str(home / "slides"), cache_dir=str(home / "cache"), loop="asyncio"
    )
    share = ShareSettings(
        data_dir=home,
        default_centre=name,
        argon2_time_cost=1,
        argon2_memory_kib=1024,
        federation_file=str(home / "peers.json"),
        node_key_file=str(home / "node.pem"),
    )
    return create_app(server, share)


@pytest.fixture
def nodes(tmp_path: Path, converted_canary: Path) -> Iterator[Nodes]:
    keys = {name: NodeKey.generate(name) for name in ("caen", "lille")}
    ports = {name: free_port() for name in keys}
    for name in keys:
        (tmp_path / name / "slides").mkdir(parents=True)
    shutil.copytree(converted_canary, tmp_path / "caen" / "slides" / "canary.zarr")
    caen_app = _app(
        tmp_path / "caen", "caen", keys["caen"], ("lille", ports["lille"], keys["lille"])
    )
    lille_app = _app(
        tmp_path / "lille", "lille", keys["lille"], ("caen", ports["caen"], keys["caen"])
    )
    with (
        LiveServer(caen_app, ports["caen"]) as caen,
        LiveServer(lille_app, ports["lille"]) as lille,
    ):
        for app, users in (
            (caen_app, (("caen-patho", "pathologist"), ("caen-admin", "admin"))),
            (lille_app, (("lille-patho", "pathologist"), ("lille-ml", "ml"))),
        ):
            centre = users[0][0].split("-")[0]
            for user, role in users:
                app.state.accounts.add_user(user, centre, role, f"{user}-password")
        (ref,) = [ref for ref, _ in caen_app.state.accounts.slides()]
        yield Nodes(caen, lille, ref.slide_id, caen_app)
    # The apps leave their peer clients open at shutdown (federation_app.py): close them here.
    for app in (caen_app, lille_app):
        for client in app.state.federation_recipient.clients.values():
            client.close()


def _assert_clean(data: bytes, slide: CanarySlide, slide_id: str) -> None:
    for text in (*CANARIES, CANARY_FILE_NAME, slide.sha256, "CMU-1", slide_id):
        assert text.encode() not in data, f"{text!r} leaked"


BODY = {
    "title": "Canary teaching set",
    "audience": ["lille"],
    "items": [
        {
            "note": "glands",
            "regions": [{"x": 256, "y": 512, "w": 512, "h": 256, "caption": "crypts"}],
        }
    ],
}


def _create(nodes: Nodes) -> dict[str, Any]:
    with httpx.Client(base_url=nodes.caen, timeout=10) as caen:
        headers = login(caen, "caen-patho")
        body = json.loads(json.dumps(BODY))
        body["items"][0]["slide_id"] = nodes.slide
        created = caen.post("/api/collections", json=body, headers=headers)
        assert created.status_code == 201, created.text
        result: dict[str, Any] = created.json()
        return result


def test_lille_reads_a_caen_collection_through_its_own_node(
    nodes: Nodes, canary_slide: CanarySlide
) -> None:
    created = _create(nodes)
    share_id = created["items"][0]["shares"]["lille"]
    seen: list[bytes] = []
    with (
        httpx.Client(base_url=nodes.lille, timeout=10) as lille,
        httpx.Client(base_url=nodes.lille, timeout=10) as ml,
    ):
        login(lille, "lille-patho")
        listed = lille.get("/api/shared-collections")
        assert listed.status_code == 200, listed.text
        seen.append(listed.content)
        assert listed.json()["unavailable"] == []
        (collection,) = listed.json()["collections"]
        assert (collection["peer"], collection["id"], collection["title"]) == (
            "caen",
            created["id"],
            "Canary teaching set",
        )
        assert "audience" not in collection
        (item,) = collection["items"]
        assert item["share_id"] == share_id and item["shared"] == f"/shared/caen/{share_id}"
        assert set(item["info"]) == {f.name for f in fields(SharedPyramidInfo)}
        assert item["regions"][0]["caption"] == "crypts"
        one = lille.get(f"/api/shared-collections/caen/{created['id']}")
        assert one.json() == collection
        assert lille.get("/api/shared-collections/caen/999999").status_code == 404
        assert lille.get("/api/shared-collections/nowhere/1").status_code == 404
        info = lille.get(item["shared"])
        tile = lille.get(f"{item['shared']}/tiles/0/1_2.jpeg")
        assert info.status_code == 200 and tile.status_code == 200
        assert info.json() == item["info"]
        seen += [one.content, info.content, tile.content]
        for data in seen:
            _assert_clean(data, canary_slide, nodes.slide)
        login(ml, "lille-ml")  # not a clinician: not in Lille's pool, nothing is shown
        assert ml.get("/api/shared-collections").json()["collections"] == []

    nodes.caen_app.state.view_aggregator.flush()
    rows = audit.records(nodes.caen_app.state.accounts.db, centre_id="caen")
    reads = [r for r in rows if r["action"] == "collection.read"]
    assert {r["actor"] for r in reads} == {"lille-patho@lille"}
    assert reads[0]["detail"]["peer"] == "lille"
    with httpx.Client(base_url=nodes.caen, timeout=10) as admin:
        login(admin, "caen-admin")
        review = admin.get(f"/api/review/slides/{nodes.slide}").json()
        views = [a for a in review["accesses"] if a["action"] == "slide.view"]
        assert [(v["user"], v["centre"], v["share_id"]) for v in views] == [
            ("lille-patho", "lille", share_id)
        ]
        assert views[0]["regions"] == {"0": [1, 2, 1, 2]}

    # Revoked at Caen: Lille's node lists nothing and its tiles stop.
    with httpx.Client(base_url=nodes.caen, timeout=10) as caen:
        headers = login(caen, "caen-patho")
        assert (
            caen.post(f"/api/collections/{created['id']}/revoke", headers=headers).status_code
            == 200
        )
    with httpx.Client(base_url=nodes.lille, timeout=10) as lille:
        login(lille, "lille-patho")
        assert lille.get("/api/shared-collections").json()["collections"] == []
        assert lille.get(f"/shared/caen/{share_id}/tiles/0/0_0.jpeg").status_code == 404


@pytest.mark.browser
def test_lille_opens_a_caen_region_in_the_rcp_view(
    nodes: Nodes, canary_slide: CanarySlide, chromium: Any
) -> None:
    created = _create(nodes)
    context = chromium.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        answer = page.request.post(
            f"{nodes.lille}/api/login",
            data={"username": "lille-patho", "password": "lille-patho-password"},
        )
        assert answer.status == 200
        page.goto(f"{nodes.lille}/collections")
        page.wait_for_function("document.body.dataset.state === 'open'")
        text = page.text_content("#collections") or ""
        assert "Canary teaching set" in text and "from caen" in text and "crypts" in text
        page.click("text=region 1")
        page.wait_for_function("document.body.dataset.state === 'open'", timeout=15_000)
        page.evaluate("iainRcp.settled()")
        state = page.evaluate(
            "(() => { const c = iainRcp.centreUm(0, false), m = iainRcp.panes[0].mpp;"
            " const item = iainRcp.panes[0].viewer.world.getItemAt(0);"
            " return {x: c.x / m.x, y: c.y / m.y, loaded: item.getFullyLoaded(), mpp: m.x}; })()"
        )
        assert state["loaded"] is True
        assert state["x"] == pytest.approx(512, abs=2) and state["y"] == pytest.approx(640, abs=2)
        assert state["mpp"] == pytest.approx(0.499, abs=0.001)
        _assert_clean(page.content().encode(), canary_slide, nodes.slide)
        assert errors == []
    finally:
        context.close()
    assert created["id"] >= 1

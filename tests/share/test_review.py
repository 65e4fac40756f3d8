"""A teaching collection of a canary slide on the real app, read by a user of another centre on
the node and by a peer node through its share; then the owner centre's admin reviews who looked.

The canary slide (real pixels, identifiers planted in its label, macro, vendor properties and
file name) goes through the real converter; no answer to a reader outside Caen may carry any of
them, and the review must name each reader's centre, share and regions.
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

from share.deidentify import SharedPyramidInfo
from share.signing import NodeKey, sign_request
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

LILLE = NodeKey.generate("lille")


@dataclass(frozen=True)
class CaenNode:
    url: str
    slide: str
    app: Any


@pytest.fixture
def caen_node(tmp_path: Path, converted_canary: Path) -> Iterator[CaenNode]:
    from share.config import ShareSettings

    data = tmp_path / "data"
    data.mkdir()
    shutil.copytree(converted_canary, data / "canary.zarr")
    caen = NodeKey.generate("caen")
    (tmp_path / "caen.pem").write_bytes(caen.private_pem())
    peers = {
        "node": "caen",
        "peers": [
            {
                "name": "lille",
                "url": f"http://127.0.0.1:{free_port()}",
                "public_key": LILLE.public_pem(),
            }
        ],
    }
    (tmp_path / "peers.json").write_text(json.dumps(peers))
    server = ServerSettings(data=str(data), cache_dir=str(tmp_path / "cache"), loop="asyncio")
    share = ShareSettings(
        data_dir=tmp_path,
        argon2_time_cost=1,
        argon2_memory_kib=1024,
        federation_file=str(tmp_path / "peers.json"),
        node_key_file=str(tmp_path / "caen.pem"),
    )
    app = create_app(server, share)
    with LiveServer(app) as url:
        accounts = app.state.accounts
        for name, centre, role in (
            ("caen-patho", "caen", "pathologist"),
            ("caen-admin", "caen", "admin"),
            ("rouen-patho", "rouen", "pathologist"),
            ("rouen-admin", "rouen", "admin"),
        ):
            accounts.add_user(name, centre, role, f"{name}-password")
        (ref,) = [ref for ref, _ in accounts.slides()]
        yield CaenNode(url, ref.slide_id, app)


def _peer_get(client: httpx.Client, path: str) -> httpx.Response:
    token = sign_request(LILLE, "GET", path, "caen", "dr.lille", {"groups": ["pool"]})
    return client.get(path, headers={"authorization": f"Bearer {token}"})


def _assert_clean(data: bytes, slide: CanarySlide) -> None:
    for text in (*CANARIES, CANARY_FILE_NAME, slide.sha256, "CMU-1"):
        assert text.encode() not in data, f"{text!r} leaked"


def test_collection_is_deidentified_and_the_owner_reviews_every_access(
    caen_node: CaenNode, canary_slide: CanarySlide
) -> None:
    node = caen_node
    with (
        httpx.Client(base_url=node.url, timeout=10) as caen,
        httpx.Client(base_url=node.url, timeout=10) as rouen,
        httpx.Client(base_url=node.url, timeout=10) as peer,
        httpx.Client(base_url=node.url, timeout=10) as admin,
    ):
        headers = login(caen, "caen-patho")
        own = caen.get("/api/slides").json()
        assert any("CANARY" in str(s.get("name")) for s in own)  # Caen sees its own names
        body = {
            "title": "Canary teaching set",
            "audience": ["lille", "rouen"],
            "items": [
                {
                    "slide_id": node.slide,
                    "note": "look at the glands",
                    "regions": [{"x": 256, "y": 256, "w": 512, "h": 400, "caption": "glands"}],
                }
            ],
        }
        created = caen.post("/api/collections", json=body, headers=headers)
        assert created.status_code == 201, created.text
        cid = created.json()["id"]
        shares = created.json()["items"][0]["shares"]
        assert set(shares) == {"lille", "rouen"}

        # A Rouen pathologist on this node: the collection, the slide's geometry and pixels.
        seen: list[bytes] = []
        login(rouen, "rouen-patho")
        for path in ("/api/collections", f"/api/collections/{cid}"):
            response = rouen.get(path)
            assert response.status_code == 200, response.text
            seen.append(response.content)
        item = rouen.get(f"/api/collections/{cid}").json()["items"][0]
        info = item["info"]
        assert set(info) == {f.name for f in fields(SharedPyramidInfo)}  # THE allow-list
        assert info["pseudonym"] == item["pseudonym"] and info["mpp_x"] > 0
        region = item["regions"][0]
        assert region["um"]["x"] == pytest.approx(256 * info["mpp_x"])
        assert region["um"]["w"] == pytest.approx(512 * info["mpp_x"])
        dzi = rouen.get(item["dzi"])
        assert dzi.status_code == 200
        tile = rouen.get(item["dzi"].replace(".dzi", "_files/12/1_1.jpeg"))
        assert tile.status_code == 200 and tile.content.startswith(b"\xff\xd8")
        seen += [dzi.content, tile.content]

        # The Lille node, through the share the collection made for Lille's pool.
        listed = _peer_get(peer, "/federation/shares")
        assert [s["share_id"] for s in listed.json()] == [shares["lille"]]
        share_info = _peer_get(peer, f"/federation/shares/{shares['lille']}")
        assert share_info.json()["pseudonym"] == item["pseudonym"]
        peer_tile = _peer_get(peer, f"/federation/shares/{shares['lille']}/tiles/0/1_1.jpeg")
        assert peer_tile.status_code == 200
        peer_seen = [listed.content, share_info.content, peer_tile.content]
        for data in seen + peer_seen:
            _assert_clean(data, canary_slide)
        for data in peer_seen:
            assert node.slide.encode() not in data  # a peer knows the pseudonym only

        # The owner centre's admin: who, from which centre, under which share, which regions.
        admin_headers = login(admin, "caen-admin")
        listing = admin.get("/api/review/slides").json()
        assert [(s["slide_id"], s["centres"], s["live_shares"]) for s in listing] == [
            (node.slide, ["lille", "rouen"], 2)
        ]
        review = admin.get(f"/api/review/slides/{node.slide}").json()
        views = [a for a in review["accesses"] if a["action"] == "slide.view"]
        by_centre = {a["centre"]: a for a in views}
        assert set(by_centre) == {"lille", "rouen"}
        assert by_centre["lille"]["user"] == "dr.lille"
        assert by_centre["lille"]["share_id"] == shares["lille"]
        assert by_centre["lille"]["regions"] == {"0": [1, 1, 1, 1]}
        assert by_centre["rouen"]["user"] == "rouen-patho"
        assert by_centre["rouen"]["share_id"] == shares["rouen"]
        assert by_centre["rouen"]["regions"] == {"dz12": [1, 1, 1, 1]}
        info_access = [a for a in review["accesses"] if a["action"] == "federation.info"]
        assert info_access[0]["share_id"] == shares["lille"]
        assert info_access[0]["share_note"] == "teaching collection: Canary teaching set"

        # ... and revokes Lille's share from there: the peer's next tile is a 404.
        revoke = admin.post(f"/api/shares/{shares['lille']}/revoke", headers=admin_headers)
        assert revoke.status_code == 200
        gone = _peer_get(peer, f"/federation/shares/{shares['lille']}/tiles/0/1_1.jpeg")
        assert gone.status_code == 404
        after = admin.get(f"/api/review/slides/{node.slide}").json()
        live = {s["share_id"]: s["live"] for s in after["shares"]}
        assert live == {shares["lille"]: False, shares["rouen"]: True}

        # Nobody else reviews Caen's slides: 403 for Caen's pathologist, 404 from Rouen.
        assert caen.get(f"/api/review/slides/{node.slide}").status_code == 403
        rouen_admin = httpx.Client(base_url=node.url, timeout=10)
        with rouen_admin:
            login(rouen_admin, "rouen-admin")
            assert rouen_admin.get(f"/api/review/slides/{node.slide}").status_code == 404
            assert rouen_admin.get("/api/review/slides").json() == []


def _browser_login(chromium: Any, url: str, user: str) -> tuple[Any, Any, list[str]]:
    context = chromium.new_context(viewport={"width": 1600, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    answer = page.request.post(
        f"{url}/api/login", data={"username": user, "password": f"{user}-password"}
    )
    assert answer.status == 200
    return context, page, errors


@pytest.mark.browser
def test_collection_page_opens_a_region_and_the_admin_revokes_from_the_review_page(
    caen_node: CaenNode, canary_slide: CanarySlide, chromium: Any
) -> None:
    node = caen_node
    with httpx.Client(base_url=node.url, timeout=10) as caen:
        headers = login(caen, "caen-patho")
        body = {
            "title": "Canary teaching set",
            "audience": ["rouen"],
            "items": [
                {
                    "slide_id": node.slide,
                    "regions": [
                        {"x": 256, "y": 256, "w": 512, "h": 400, "caption": "glands"},
                        {"x": 1000, "y": 1200, "w": 300, "h": 300, "caption": "stroma"},
                    ],
                }
            ],
        }
        created = caen.post("/api/collections", json=body, headers=headers).json()
    share_id = created["items"][0]["shares"]["rouen"]

    context, page, errors = _browser_login(chromium, node.url, "rouen-patho")
    try:
        page.goto(f"{node.url}/collections")
        page.wait_for_function("document.body.dataset.state === 'open'")
        assert "Canary teaching set" in page.text_content("#collections")  # type: ignore[operator]
        assert "glands" in page.text_content("#collections")  # type: ignore[operator]
        page.screenshot(path=str(_artifacts() / "collections-page.png"))
        _assert_clean(page.content().encode(), canary_slide)
        page.click("text=region 2")
        page.wait_for_function("document.body.dataset.state === 'open'", timeout=15_000)
        page.evaluate("iainRcp.settled()")
        centre = page.evaluate(
            "(() => { const c = iainRcp.centreUm(0, false), m = iainRcp.panes[0].mpp;"
            " return {x: c.x / m.x, y: c.y / m.y, n: iainRcp.panes.length}; })()"
        )
        assert centre["n"] == 1
        assert centre["x"] == pytest.approx(1150, abs=2) and centre["y"] == pytest.approx(
            1350, abs=2
        )
        _assert_clean(page.content().encode(), canary_slide)
        # Both regions side by side, moving together.
        page.goto(f"{node.url}/rcp?collection={created['id']}&item=0")
        page.wait_for_function("document.body.dataset.state === 'open'", timeout=15_000)
        assert page.evaluate("iainRcp.panes.length") == 2
        page.evaluate("iainRcp.settled()")
        page.screenshot(path=str(_artifacts() / "rcp-collection-regions.png"))
        assert errors == []
    finally:
        context.close()

    context, page, errors = _browser_login(chromium, node.url, "caen-admin")
    try:
        page.goto(f"{node.url}/review")
        page.wait_for_function("document.body.dataset.state === 'open'")
        page.click(f"tr[data-slide='{node.slide}']")
        page.wait_for_function("document.body.dataset.state === 'slide'")
        accesses = page.text_content("#review-accesses") or ""
        assert "rouen-patho" in accesses and share_id in accesses
        page.click(f"button[data-share='{share_id}']")
        page.wait_for_function(
            f"document.querySelector(\"button[data-share='{share_id}']\").disabled"
        )
        assert "revoked" in (page.text_content("#review-shares") or "")
        page.screenshot(path=str(_artifacts() / "review-page.png"))
        assert errors == []
    finally:
        context.close()
    with httpx.Client(base_url=node.url, timeout=10) as rouen:
        login(rouen, "rouen-patho")
        assert rouen.get(f"/api/collections/{created['id']}").status_code == 200  # still listed
        assert rouen.get(created["items"][0]["dzi"]).status_code == 404  # pixels ended


def _artifacts() -> Path:
    from tests.conftest import REPO_ROOT

    path = REPO_ROOT / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path

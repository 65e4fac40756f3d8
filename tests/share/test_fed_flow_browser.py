"""Done when (issue 7): the second-opinion flow in a browser, across three real nodes.

A Caen pathologist asks Lille for a second opinion on a real slide with the current view pinned;
the Lille pathologist opens it from Lille's node, accepts, pans, annotates and answers; Caen
sees the answer and Lille's annotation in its own viewer; Caen's admin sees Lille's accesses in
the audit trail; after Caen closes the request Lille gets 404 on every tile it had loaded.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.share.conftest_fed_nodes import FedNode, fed_nodes, fed_smtp
from tests.share.conftest_federation import CANARIES, CANARY_FILE_NAME, canary_slide

__all__ = ["canary_slide", "fed_nodes", "fed_smtp"]  # fixtures used by name

pytestmark = pytest.mark.browser

_TILE = re.compile(r"/shared/caen/[^/]+/tiles/\d+/\d+_\d+\.jpeg$")


def _login(browser: Any, node: FedNode, username: str, target: str) -> Any:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.goto(f"{node.url}/login?next={target}")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", f"{username}-password")
    page.click("button[type=submit]")
    page.wait_for_url(f"{node.url}{target}")
    return page


def _fetch_status(page: Any, url: str) -> int:
    status: int = page.evaluate("(u) => fetch(u, {cache: 'no-store'}).then((r) => r.status)", url)
    return status


def _owners(page: Any) -> list[str]:
    """Owners of the annotations the annotation layer shows now."""
    owners: list[str] = page.evaluate(
        """() => iain.annotations.idle().then(() =>
             iain.annotations.shown.flatMap((c) => c.records).map((r) => r.owner))"""
    )
    return owners


def test_second_opinion_across_three_nodes_in_the_browser(
    chromium: Any, fed_nodes: dict[str, FedNode]
) -> None:
    caen, lille = fed_nodes["caen"], fed_nodes["lille"]
    pages: list[Any] = []
    try:
        # --- Caen: the requester pins what is on screen and asks Lille's pathologist
        probe = _login(chromium, caen, "caen-patho", "/")
        pages.append(probe)
        slide_id = probe.evaluate("fetch('/api/slides').then((r) => r.json())")[0]["id"]
        view = f"/view/{slide_id}?x_px=1100&y_px=1500&zoom=2"
        requester = probe
        requester.goto(f"{caen.url}{view}")
        requester.wait_for_selector("body[data-opinions='ready']")
        requester.fill("#opinion-question", "Cribriform pattern: grade group 3 or 4?")
        requester.select_option("#opinion-centre", "lille")
        requester.fill("#opinion-consultant", "lille-patho")
        requester.select_option("#opinion-urgency", "urgent")
        requester.click("#btn-ask")
        requester.wait_for_selector("#opinion-status[data-id]")
        created = requester.evaluate("window.iainOpinion.created")
        oid = created["id"]
        (region,) = created["regions"]
        assert created["state"] == "sent" and region["w"] > 0 and region["h"] > 0
        # the pinned region is the viewport: centred on the deep link's point
        assert abs(region["x"] + region["w"] / 2 - 1100) < 10
        assert abs(region["y"] + region["h"] / 2 - 1500) < 10
        assert region["w"] < 800  # zoomed in: a region, not the slide

        # --- Lille: the inbox on Lille's own node, the slide opened at the pinned region
        consultant = _login(chromium, lille, "lille-patho", "/shared-with-me")
        pages.append(consultant)
        card = consultant.wait_for_selector(".shared-card")
        assert created["slides"][0]["pseudonym"] in (card.text_content() or "")
        assert "/shared-view/caen/" in (card.get_attribute("href") or "")
        consultant.goto(f"{lille.url}/opinions")
        tiles: list[str] = []
        consultant.on(
            "response",
            lambda r: tiles.append(r.url) if _TILE.search(r.url) and r.status == 200 else None,
        )
        item = f"article.opinion[data-peer='caen'][data-id='{oid}']"
        consultant.wait_for_selector(item)
        assert "grade group 3 or 4" in consultant.text_content(item)
        consultant.click(f"{item} a.open-slide")
        consultant.wait_for_url(re.compile(r"/shared-view/caen/[^/]+\?opinion="))
        consultant.wait_for_selector("body[data-shared='ready']")
        consultant.evaluate("window.iain.settled()")
        visible = consultant.evaluate(
            """() => { const v = iain.viewer; const r = v.world.getItemAt(0)
                 .viewportToImageRectangle(v.viewport.getBounds());
               return {x: r.x, y: r.y, w: r.width, h: r.height}; }"""
        )
        cx, cy = region["x"] + region["w"] / 2, region["y"] + region["h"] / 2
        assert visible["x"] <= cx <= visible["x"] + visible["w"]
        assert visible["y"] <= cy <= visible["y"] + visible["h"]
        assert consultant.locator(".pinned-region").count() == 1
        assert tiles, "no tile came through Lille's node"
        title = consultant.text_content("#slide-name") or ""
        assert title.startswith("SHR-")  # the pseudonym, never the slide's name
        html = consultant.content()
        for text in (*CANARIES, CANARY_FILE_NAME, slide_id):
            assert text not in html

        consultant.click("#btn-accept")
        consultant.wait_for_selector("body[data-opinion-state='accepted']")

        # annotates the pinned region with the annotation layer, saved at Caen through Lille
        consultant.click("#annotations-panel button[data-tool='rectangle']")
        box = consultant.locator("#osd").bounding_box()
        x0, y0 = box["x"] + box["width"] * 0.4, box["y"] + box["height"] * 0.4
        consultant.mouse.move(x0, y0)
        consultant.mouse.down()
        for step in range(1, 6):
            consultant.mouse.move(x0 + 30 * step, y0 + 20 * step)
        consultant.mouse.up()
        consultant.wait_for_selector("#annotation-status[data-kind='ok']")
        assert _owners(consultant) == ["lille:lille-patho"]

        before = len(tiles)
        consultant.evaluate("iain.viewer.viewport.panBy(new OpenSeadragon.Point(0.12, 0))")
        consultant.evaluate("window.iain.settled()")
        assert len(tiles) > before, "panning fetched no new tile"

        consultant.fill("#answer-text", "Cribriform glands: grade group 3 (4+3).")
        consultant.select_option("#answer-agreement", "partly")
        consultant.fill("#answer-diagnosis", "Acinar adenocarcinoma")
        consultant.click("#btn-answer")
        consultant.wait_for_selector("body[data-opinion-state='answered']")
        assert "grade group 3" in consultant.text_content("#opinion-answer")

        # --- Caen: the answer and Lille's annotation in Caen's own viewer
        requester.reload()
        requester.wait_for_selector("body[data-opinions='ready']")
        answered = f"#opinion-requests .opinion[data-id='{oid}'][data-state='answered']"
        requester.wait_for_selector(answered)
        assert "grade group 3 (4+3)" in requester.text_content(answered)
        assert "partly" in requester.text_content(answered)
        assert _owners(requester) == ["lille:lille-patho"]  # drawn in Caen's own viewer

        # --- Caen's admin: Lille's accesses on the audit page
        admin = _login(chromium, caen, "caen-admin", "/audit")
        pages.append(admin)
        admin.wait_for_selector("body[data-state='loaded']")
        lille_actions = set(
            admin.eval_on_selector_all(
                "#audit tr[data-actor='lille-patho@lille']",
                "(rows) => rows.map((r) => r.dataset.action)",
            )
        )
        assert {"federation.opinion.accept", "federation.opinion.answer"} <= lille_actions
        assert {"federation.info", "slide.view", "federation.annotation.create"} <= lille_actions

        # --- Caen closes the request: every tile Lille loaded is 404 from Lille's node
        requester.goto(f"{caen.url}/opinions")
        close = f"#mine article.opinion[data-id='{oid}'] button.btn-close"
        requester.wait_for_selector(close)
        requester.click(close)
        requester.wait_for_selector(f"#mine article.opinion[data-id='{oid}'][data-state='closed']")
        # the revocation notice purged Lille's cache before the close answered: no waiting
        urls = sorted(set(tiles))
        assert len(urls) >= 4
        statuses = {url: _fetch_status(consultant, url) for url in urls}
        assert set(statuses.values()) == {404}, statuses
    finally:
        for page in pages:
            page.context.close()

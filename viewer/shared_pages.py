"""Pages of sharing between centres: "shared with me", a shared slide's viewer, second opinions.

Server-rendered shells like :mod:`viewer.pages`; small scripts under ``viewer/static/`` read the
JSON API. The shared-slide viewer is the ordinary ``viewer.js`` pointed at the recipient's proxy
(``/shared/{peer}/{share_id}`` for the allow-listed slide facts, ``.../tiles/...`` for tiles,
``.../annotations`` for the consultant's annotations): the page never names the slide, only the
share's pseudonym, and nothing here reads a slide of another centre directly.
"""

from __future__ import annotations

import json
import re

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from viewer.pages import (
    ANNOTATION_SCRIPTS,
    OPENSEADRAGON_URL,
    STATIC_URL,
    VIEWER_CONTROLS,
    VIEWER_STAGE,
    _page,
)

__all__ = ["router"]

router = APIRouter()

_PEER = re.compile(r"^[a-z][a-z0-9-]{0,31}$")  # share.federation's node names
_SHARE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _topbar(current: str) -> str:
    links = (("/", "Slides"), ("/shared-with-me", "Shared with me"), ("/opinions", "Opinions"))
    items = " ".join(
        f'<a class="nav{" current" if href == current else ""}" href="{href}">{label}</a>'
        for href, label in links
    )
    return f'<header class="topbar"><a class="brand" href="/">IAIN</a>{items}</header>'


@router.get("/shared-with-me", response_class=HTMLResponse, include_in_schema=False)
def shared_with_me_page() -> HTMLResponse:
    """Slides other centres shared with me (from every peer: ``GET /shared``)."""
    body = f"""<body class="list-page">
{_topbar("/shared-with-me")}
<main>
  <h1 class="page-title">Shared with me</h1>
  <p id="status" class="status">Asking the other centres…</p>
  <p id="unavailable" class="status" hidden></p>
  <div id="shared" class="cards" aria-live="polite"></div>
</main>
</body>"""
    return HTMLResponse(_page("IAIN — shared with me", body, (f"{STATIC_URL}/shared-list.js",)))


@router.get("/opinions", response_class=HTMLResponse, include_in_schema=False)
def opinions_page() -> HTMLResponse:
    """Second opinions: asked of me (at this node and at every peer), and asked by me."""
    body = f"""<body class="list-page">
{_topbar("/opinions")}
<main>
  <h1 class="page-title">Second opinions</h1>
  <h2>Asked of me</h2>
  <p id="inbox-status" class="status">Loading…</p>
  <div id="inbox" class="opinion-list" aria-live="polite"></div>
  <h2>My requests</h2>
  <p id="mine-status" class="status">Loading…</p>
  <div id="mine" class="opinion-list" aria-live="polite"></div>
</main>
</body>"""
    return HTMLResponse(_page("IAIN — second opinions", body, (f"{STATIC_URL}/opinions-page.js",)))


@router.get("/shared-view/{peer}/{share_id}", response_class=HTMLResponse, include_in_schema=False)
def shared_viewer_page(peer: str, share_id: str) -> HTMLResponse:
    """The viewer on a slide shared by ``peer``; the share is checked by the owner on each call."""
    if not _PEER.fullmatch(peer) or not _SHARE_ID.fullmatch(share_id):
        body = f"""<body class="list-page">{_topbar("")}
<main><p class="error">No such shared slide.</p></main></body>"""
        return HTMLResponse(_page("IAIN — not found", body), status_code=404)
    base = f"/shared/{peer}/{share_id}"
    config = json.dumps(
        {
            "slideId": share_id,
            "peer": peer,
            "shareId": share_id,
            "infoUrl": base,
            "tileBase": f"{base}/tiles",
            "annotationsBase": f"{base}/annotations",
            "osdPrefix": f"{OPENSEADRAGON_URL}/images/",
        }
    ).replace("<", "\\u003c")
    body = f"""<body class="view-page shared-view">
<header class="topbar">
  <a class="brand" href="/">IAIN</a>
  <a class="nav" href="/shared-with-me">Shared with me</a>
  <a class="nav" href="/opinions">Opinions</a>
  <span id="slide-name" class="sub"></span>
  <span class="shared-from">shared by {peer}</span>
  <span id="slide-meta" class="meta"></span>
</header>
<div class="workspace">
{VIEWER_STAGE}  <aside class="panel">
    <section id="opinion-panel" hidden>
      <h2>Second opinion</h2>
      <div id="opinion"></div>
    </section>
    <section id="annotations-panel"><h2>Annotations</h2></section>
{VIEWER_CONTROLS}  </aside>
</div>
<p id="error" class="error" hidden></p>
<script id="viewer-config" type="application/json">{config}</script>
</body>"""
    scripts = (
        f"{OPENSEADRAGON_URL}/openseadragon.min.js",
        f"{STATIC_URL}/shared.js",  # sets the hooks viewer.js reads: load it first
        *ANNOTATION_SCRIPTS,  # attached by shared-view.js, pointed at the proxy
        f"{STATIC_URL}/viewer.js",
        f"{STATIC_URL}/shared-view.js",
    )
    return HTMLResponse(_page("IAIN — shared slide", body, scripts))

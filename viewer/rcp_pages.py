"""Pages of issue 7's meeting and oversight views: teaching collections, the tumour-board (RCP)
view and the owner centre's access review.

``GET /rcp?slides=a,b[,c,d]`` shows 2-4 slides side by side in synchronised viewers (in µm, so
slides of different mpp line up); ``GET /rcp?collection=N&item=I[&region=J][&peer=P]`` shows
one collection slide's pinned regions (or one of them), of this node or of peer node P.
``GET /collections`` lists the teaching collections the caller may read; ``GET /review`` is
the centre admin's access review. The pages are shells: every fact comes from the JSON APIs,
which decide who may see what.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping
from typing import Annotated

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import HTMLResponse

from tiling.errors import PyramidNotFoundError
from viewer.pages import OPENSEADRAGON_URL, STATIC_URL
from viewer.pages import _page as page_html

__all__ = ["install_rcp_pages", "router"]

router = APIRouter()

_SLIDE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._~-]{0,127}$")
MAX_PANES = 4


def _page(title: str, body: str, scripts: tuple[str, ...]) -> HTMLResponse:
    return HTMLResponse(page_html(title, body, scripts, styles=(f"{STATIC_URL}/rcp.css",)))


def _config(data: Mapping[str, object]) -> str:
    # "<" escaped so that no value can close the script element it sits in.
    return json.dumps(data).replace("<", "\\u003c")


def _error(message: str, status: int) -> HTMLResponse:
    body = f"""<body class="list-page"><header class="topbar"><a class="brand" href="/">IAIN</a>
</header><main><p class="error">{html.escape(message)}</p></main></body>"""
    response = _page("IAIN", body, ())
    response.status_code = status
    return response


@router.get("/rcp", response_class=HTMLResponse, include_in_schema=False)
def rcp_page(
    request: Request,
    slides: Annotated[str | None, Query(max_length=600)] = None,
    collection: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    item: Annotated[int, Query(ge=0, le=1000)] = 0,
    region: Annotated[int | None, Query(ge=0, le=1000)] = None,
    peer: Annotated[str | None, Query(pattern=r"^[a-z][a-z0-9-]{0,31}$")] = None,
) -> HTMLResponse:
    """Tumour-board view: 2-4 slides, or a collection slide's pinned regions, side by side."""
    ids: list[str] = []
    if slides is not None:
        ids = [s for s in slides.split(",") if s]
        if not 2 <= len(ids) <= MAX_PANES or not all(_SLIDE_ID.fullmatch(s) for s in ids):
            return _error(f"Name 2 to {MAX_PANES} slides: /rcp?slides=a,b", 422)
        for slide_id in ids:
            try:
                request.app.state.slide_access(request, slide_id)
            except PyramidNotFoundError:
                return _error("No such slide.", 404)
    elif collection is None:
        return _error("Name slides (?slides=a,b) or a collection (?collection=N).", 422)
    config = {
        "slides": ids,
        "collection": collection,
        "peer": peer,  # a collection of another node, read through this node's share proxy
        "item": item,
        "region": region,
        "osdPrefix": f"{OPENSEADRAGON_URL}/images/",
    }
    body = f"""<body class="rcp-page">
<header class="topbar">
  <a class="brand" href="/">IAIN</a><span class="sub">Tumour board</span>
  <span id="rcp-title" class="meta"></span>
</header>
<div class="rcp-tools">
  <label><input type="checkbox" id="rcp-sync" checked> Synchronise (µm)</label>
  <button type="button" id="rcp-home">Fit all</button>
  <span id="rcp-status" class="status"></span>
</div>
<main id="rcp-grid" class="rcp-grid"></main>
<p id="error" class="error" hidden></p>
<script id="rcp-config" type="application/json">{_config(config)}</script>
</body>"""
    scripts = (f"{OPENSEADRAGON_URL}/openseadragon.min.js", f"{STATIC_URL}/rcp.js")
    return _page("IAIN — tumour board", body, scripts)


@router.get("/collections", response_class=HTMLResponse, include_in_schema=False)
def collections_page() -> HTMLResponse:
    """Teaching collections the caller may read, each slide with links to its regions."""
    body = """<body class="list-page">
<header class="topbar"><a class="brand" href="/">IAIN</a>
<span class="sub">Teaching collections</span></header>
<main>
  <p id="status" class="status">Loading collections…</p>
  <div id="collections" class="rcp-collections" aria-live="polite"></div>
</main>
</body>"""
    return _page("IAIN — teaching collections", body, (f"{STATIC_URL}/collections.js",))


@router.get("/review", response_class=HTMLResponse, include_in_schema=False)
def review_page() -> HTMLResponse:
    """The centre admin's view of who looked at each slide, with a revoke button per share."""
    body = """<body class="list-page">
<header class="topbar"><a class="brand" href="/">IAIN</a><span class="sub">Access review</span>
</header>
<main>
  <p id="status" class="status">Loading…</p>
  <table id="review-slides" class="rcp-table"></table>
  <section id="review-slide" hidden>
    <h2 id="review-title"></h2>
    <h3>Shares</h3><table id="review-shares" class="rcp-table"></table>
    <h3>Accesses</h3><table id="review-accesses" class="rcp-table"></table>
  </section>
</main>
</body>"""
    return _page("IAIN — access review", body, (f"{STATIC_URL}/review.js",))


def install_rcp_pages(app: FastAPI) -> None:
    """Add the three pages (their scripts are served from the viewer's static folder)."""
    app.include_router(router)

"""The browser viewer's pages: the slide list (``GET /``) and the slide viewer (``GET /view/{id}``).

The pages are server-rendered shells; the small vanilla scripts under ``viewer/static/`` read the
JSON API (``/api/slides``, ``/api/slides/{id}``) and the DeepZoom routes, so the pages depend on
the HTTP contract of issue 4 only, not on how the backend stores slides. OpenSeadragon is served
from ``node_modules`` (installed by ``npm ci`` from the lock file), never copied into the repo.

``install_pages(app)`` adds the routes and mounts the static folders; FastAPI's
``include_router`` does not carry ``Mount`` routes, hence one function instead of a bare router.
``create_app`` calls it with ``required=False``: a server without ``npm ci`` still serves tiles.
"""

from __future__ import annotations

import html
import json
import logging
import re
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.middleware.gzip import GZipMiddleware
from starlette.types import ASGIApp

from tiling.errors import PyramidNotFoundError
from viewer.errors import OpenSeadragonMissingError

__all__ = [
    "OPENSEADRAGON_URL",
    "STATIC_URL",
    "default_openseadragon_dir",
    "install_pages",
    "router",
]

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_URL = "/static/viewer"
OPENSEADRAGON_URL = "/static/vendor/openseadragon"

# The viewer's stage and its magnification / measure controls: the same markup on every page
# that shows a slide (viewer.js finds them by id), and the annotation layer's scripts in order.
VIEWER_STAGE = """  <div class="stage">
    <div id="osd" class="osd"></div>
    <svg id="ruler-layer" class="ruler-layer" aria-hidden="true"></svg>
    <div id="scalebar" class="scalebar" hidden>
      <div class="bar"></div><span class="label"></span>
    </div>
  </div>
"""
VIEWER_CONTROLS = """    <section>
      <h2>Magnification</h2>
      <div class="mag"><span id="mag">–</span></div>
      <div class="buttons">
        <button type="button" id="btn-1to1" title="one image pixel per screen pixel">1:1</button>
        <button type="button" data-mag="5">×5</button>
        <button type="button" data-mag="10">×10</button>
        <button type="button" data-mag="20">×20</button>
        <button type="button" data-mag="40">×40</button>
        <button type="button" id="btn-home" title="whole slide (0)">Fit</button>
      </div>
    </section>
    <section>
      <h2>Measure</h2>
      <div class="buttons">
        <button type="button" id="btn-ruler" aria-pressed="false"
          title="click points; double-click or Enter to finish">Length</button>
        <button type="button" id="btn-area" aria-pressed="false"
          title="click corners; double-click or Enter to close">Area</button>
        <button type="button" id="btn-clear">Clear</button>
      </div>
      <output id="measure" class="measure"></output>
    </section>
"""
COMMON_JS = f"{STATIC_URL}/common.js"
ANNOTATION_SCRIPTS = (f"{STATIC_URL}/annotation-geometry.js", f"{STATIC_URL}/annotations.js")
# Slide ids are opaque tokens; anything else cannot name a slide and is not echoed into a page.
_SLIDE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._~-]{0,127}$")


def default_openseadragon_dir() -> Path:
    """The npm package folder beside the repository's ``package.json``."""
    return Path(__file__).resolve().parent.parent / "node_modules" / "openseadragon"


router = APIRouter()


def _page(
    title: str, body: str, scripts: tuple[str, ...] = (), styles: tuple[str, ...] = ()
) -> str:
    """Every page's HTML; ``common.js`` (CSRF token, element builders) loads before the
    page's own scripts, ``viewer.css`` before its own styles."""
    tags = "\n".join(f'<script src="{src}"></script>' for src in (COMMON_JS, *scripts))
    links = "".join(f'\n<link rel="stylesheet" href="{href}">' for href in styles)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<link rel="stylesheet" href="{STATIC_URL}/viewer.css">{links}
</head>
{body}
{tags}
</html>
"""


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def slide_list_page() -> HTMLResponse:
    """The slide list; cards are filled in by ``slides.js`` from ``/api/slides``."""
    body = f"""<body class="list-page">
<header class="topbar"><a class="brand" href="/">IAIN</a><span class="sub">Slides</span>
  <nav class="pages"><a class="nav" href="/shared-with-me">Shared with me</a>
  <a class="nav" href="/opinions">Second opinions</a>
  <a class="nav" href="/collections">Teaching collections</a>
  <a class="nav" href="/review">Access review (admin)</a>
  <a class="nav" href="/audit">Audit trail (admin)</a></nav></header>
<main>
  <p id="status" class="status">Loading slides…</p>
  <div id="slides" class="cards" aria-live="polite"></div>
</main>
<footer class="footer">Viewer: <a href="{OPENSEADRAGON_URL}/LICENSE.txt">OpenSeadragon</a>
(BSD-3-Clause)</footer>
</body>"""
    return HTMLResponse(_page("IAIN — slides", body, (f"{STATIC_URL}/slides.js",)))


@router.get("/view/{slide_id}", response_class=HTMLResponse, include_in_schema=False)
def viewer_page(request: Request, slide_id: str) -> HTMLResponse:
    """The viewer shell, for a slide the caller may see (the same access hook as the tiles).

    Unknown and forbidden ids get the same 404: an HTML page for browsers, the JSON error
    otherwise.
    """
    if not _SLIDE_ID.fullmatch(slide_id):
        return HTMLResponse(_not_found_page(), status_code=404)
    try:
        request.app.state.slide_access(request, slide_id)
    except PyramidNotFoundError:
        if "text/html" in request.headers.get("accept", ""):
            return HTMLResponse(_not_found_page(), status_code=404)
        raise
    # "<" escaped so that no value can close the script element it sits in.
    config = json.dumps(
        {
            "slideId": slide_id,
            "osdPrefix": f"{OPENSEADRAGON_URL}/images/",
            "tileGrants": getattr(request.app.state, "tile_grants", None) is not None,
        }
    )
    annotations = _annotations_section(request, f"/api/slides/{slide_id}/annotations")
    config = config.replace("<", "\\u003c")
    body = f"""<body class="view-page">
<header class="topbar">
  <a class="brand" href="/">IAIN</a>
  <span id="slide-name" class="sub"></span>
  <span id="slide-meta" class="meta"></span>
</header>
<div class="workspace">
{VIEWER_STAGE}  <aside class="panel">
{VIEWER_CONTROLS}    <section id="overlay-panel" hidden>
      <h2>Overlay</h2>
      <label class="row"><input type="checkbox" id="overlay-on" checked>
        <select id="overlay-select"></select></label>
      <label class="row">Opacity <input type="range" id="overlay-opacity" min="0" max="100"
        value="50"><span id="overlay-opacity-value">50 %</span></label>
    </section>
    {annotations}
    <section class="help">
      <h2>Keys</h2>
      <p>Arrows / WASD pan · + / − zoom · 0 fit · Esc cancels a measure</p>
    </section>
  </aside>
</div>
<p id="error" class="error" hidden></p>
<script id="viewer-config" type="application/json">{config}</script>
</body>"""
    scripts = (
        f"{OPENSEADRAGON_URL}/openseadragon.min.js",
        f"{STATIC_URL}/overlay.js",  # listens for the overlay viewer.js opens: load it first
        *ANNOTATION_SCRIPTS,  # attached by viewer.js once the slide is open
        f"{STATIC_URL}/viewer.js",
        f"{STATIC_URL}/opinion-request.js",  # the second-opinion panel (viewer/shared_pages.py)
    )
    return HTMLResponse(_page(f"IAIN — {slide_id}", body, scripts))


@router.get("/audit", response_class=HTMLResponse, include_in_schema=False)
def audit_page() -> HTMLResponse:
    """The centre admin's audit trail (``?slide_id=`` for one slide), read by ``audit.js`` from
    ``/api/audit``: the API decides who may read it, the page only shows the answer."""
    body = """<body class="list-page">
<header class="topbar"><a class="brand" href="/">IAIN</a><span class="sub">Audit trail</span>
</header>
<main>
  <p id="status" class="status">Loading the audit trail…</p>
  <p><a id="audit-csv" href="/api/audit?format=csv">Download CSV</a></p>
  <table id="audit" class="audit"><thead><tr><th>#</th><th>When (UTC)</th><th>Who</th>
  <th>Action</th><th>Outcome</th><th>Slide</th><th>Detail</th></tr></thead><tbody></tbody></table>
</main>
</body>"""
    return HTMLResponse(_page("IAIN — audit trail", body, (f"{STATIC_URL}/audit.js",)))


def _annotations_section(request: Request, base: str) -> str:
    """The annotation panel's anchor: ``annotations.js`` builds its tools inside it and takes
    the API base from ``data-annotations-base`` (another page may point it elsewhere, e.g. a
    peer's proxy). Empty without accounts: the annotation API needs a signed-in owner."""
    if getattr(request.app.state, "accounts", None) is None:
        return ""
    session = getattr(request.state, "session", None)
    role = getattr(getattr(session, "principal", None), "role", None)
    can_edit = "false" if role is None or role == "operator" else "true"
    return (
        f'<section id="annotations-panel" data-annotations-base="{html.escape(base)}"'
        f' data-can-edit="{can_edit}"><h2>Annotations</h2></section>'
    )


def _not_found_page() -> str:
    body = """<body class="list-page"><header class="topbar"><a class="brand" href="/">IAIN</a>
</header><main><p class="error">No such slide.</p></main></body>"""
    return _page("IAIN — not found", body)


def install_pages(
    app: FastAPI, openseadragon_dir: Path | None = None, *, required: bool = True
) -> None:
    """Add the page routes and mount the viewer's static files and OpenSeadragon.

    Without OpenSeadragon (``npm ci`` not run) this raises :class:`OpenSeadragonMissingError`
    when ``required``; otherwise the tile and API routes keep working, the pages say what is
    missing and the library's URLs answer that error instead of a bare 404.
    """
    osd_dir = openseadragon_dir or default_openseadragon_dir()
    build = osd_dir / "build" / "openseadragon"
    missing = not (build / "openseadragon.min.js").is_file()
    message = f"OpenSeadragon not found under {osd_dir}: run `npm ci` in the repository root"
    if missing and required:
        raise OpenSeadragonMissingError(message)
    from viewer.shared_pages import router as shared_router  # it imports this module

    app.include_router(router)
    app.include_router(shared_router)  # "shared with me", shared slides, second opinions
    # Compressed: OpenSeadragon is 348 kB as shipped, ~100 kB gzipped; on a 20 ms link that is
    # a few round trips of TCP slow start saved before the first tile is even asked for.
    app.mount(STATIC_URL, _gzip(StaticFiles(directory=STATIC_DIR)), name="viewer-static")
    if missing:
        logger.error("%s; the viewer pages will not work", message)

        def openseadragon_missing(path: str) -> None:
            raise OpenSeadragonMissingError(message)

        app.add_api_route(
            f"{OPENSEADRAGON_URL}/{{path:path}}", openseadragon_missing, include_in_schema=False
        )
        return
    licence = osd_dir / "LICENSE.txt"

    def openseadragon_licence() -> FileResponse:
        """OpenSeadragon's BSD licence travels with the library it covers."""
        return FileResponse(licence, media_type="text/plain; charset=utf-8")

    # Before the mount below: a Mount matches its whole prefix.
    app.add_api_route(
        f"{OPENSEADRAGON_URL}/LICENSE.txt", openseadragon_licence, include_in_schema=False
    )
    app.mount(OPENSEADRAGON_URL, _gzip(StaticFiles(directory=build)), name="openseadragon")
    logger.info("viewer pages installed, OpenSeadragon from %s", build)


def _gzip(app: ASGIApp) -> ASGIApp:
    """Text assets only pass through here (tiles are JPEG and never do)."""
    return GZipMiddleware(app, minimum_size=1024)

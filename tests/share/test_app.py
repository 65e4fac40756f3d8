"""The real application: ``viewer.create_app`` with accounts installed, over real uvicorn.

Every route of the app (tile server, IIIF, Zarr, DeepZoom fast path, accounts, annotations,
audit) is enumerated: without a session none answers but the public ones; with a session a
slide of another centre answers exactly like an unknown id.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from share.config import ShareSettings
from share.web import flatten_routes
from tests.share.conftest import LiveServer, login
from tests.viewer.pyramids import synthetic_rgb, write_pyramid
from viewer.app import create_app
from viewer.config import ServerSettings


@dataclass(frozen=True)
class RealApp:
    url: str
    own: str  # slide id in caen
    other: str  # slide id in lille
    app: object


@pytest.fixture
def real_app(tmp_path: Path, db_url: str) -> Iterator[RealApp]:
    data = tmp_path / "data"
    data.mkdir()
    write_pyramid(data / "caen-slide.zarr", synthetic_rgb(600, 400, seed=1), tile=256)
    write_pyramid(data / "lille-slide.zarr", synthetic_rgb(300, 200, seed=2), tile=256)
    server = ServerSettings(data=str(data), cache_dir=str(tmp_path / "cache"), loop="asyncio")
    share = ShareSettings(
        data_dir=tmp_path, database_url=db_url, argon2_time_cost=1, argon2_memory_kib=1024
    )
    app = create_app(server, share)
    with LiveServer(app) as url:
        accounts = app.state.accounts
        names = {name: ref.slide_id for ref, name in accounts.slides()}
        accounts.assign_slide(names["lille-slide"], "lille")
        for name, centre in (("caen-patho", "caen"), ("caen-ml", "caen")):
            role = "ml" if name.endswith("ml") else "pathologist"
            accounts.add_user(name, centre, role, f"{name}-password")
        yield RealApp(url, names["caen-slide"], names["lille-slide"], app)


def _fill(path: str, slide_id: str) -> str:
    path = path.replace("{slide_id}", slide_id)
    return re.sub(r"\{[^}]+\}", "0", path)


def test_real_app_every_route_decided(real_app: RealApp) -> None:
    app = real_app.app
    routes = flatten_routes(app.routes)  # type: ignore[attr-defined]
    settings = app.state.share_settings  # type: ignore[attr-defined]
    with httpx.Client(base_url=real_app.url) as anon, httpx.Client(base_url=real_app.url) as c:
        for path, methods in routes:
            if path in settings.public_paths or path.startswith(settings.public_prefixes):
                continue
            for method in sorted(methods - {"HEAD", "WEBSOCKET"}):
                r = anon.request(method, _fill(path, real_app.own), headers={"accept": "*/*"})
                assert r.status_code == 401, f"{method} {path} answered {r.status_code}"
        headers = login(c, "caen-patho")
        slide_routes = [(p, m) for p, m in routes if "{slide_id}" in p]
        assert len(slide_routes) >= 10
        for path, methods in slide_routes:
            for method in sorted(methods - {"HEAD", "WEBSOCKET"}):
                other = c.request(method, _fill(path, real_app.other), headers=headers)
                unknown = c.request(method, _fill(path, "f" * 16), headers=headers)
                assert other.status_code == unknown.status_code == 404, (method, path)
                assert other.json()["error"] == unknown.json()["error"] == "slide_not_found"
        # The DeepZoom tile path answered by the ASGI fast path goes through the same hook.
        own_tile = c.get(f"/slides/{real_app.own}_files/0/0_0.jpeg")
        assert own_tile.status_code == 200
        assert c.get(f"/slides/{real_app.other}_files/0/0_0.jpeg").status_code == 404
        assert anon.get(f"/slides/{real_app.own}_files/0/0_0.jpeg").status_code == 401
        visible = [s["id"] for s in c.get("/api/slides").json()]
        assert visible == [real_app.own]


def test_real_app_pseudonymises_for_ml(real_app: RealApp) -> None:
    with httpx.Client(base_url=real_app.url) as c:
        login(c, "caen-ml")
        slides = c.get("/api/slides").json()
        assert [(s["id"], s["name"]) for s in slides] == [(real_app.own, real_app.own)]


def test_slide_list_links_every_page_and_each_answers(real_app: RealApp) -> None:
    with httpx.Client(base_url=real_app.url) as c:
        login(c, "caen-patho")
        home = c.get("/", headers={"Accept": "text/html"})
        links = re.findall(r'<a class="nav" href="(/[^"]*)"', home.text)
        assert links == ["/shared-with-me", "/opinions", "/collections", "/review", "/audit"]
        for link in links:  # admin pages render for anyone; their data API decides
            page = c.get(link, headers={"Accept": "text/html"})
            assert page.status_code == 200, link
            assert "<!doctype html>" in page.text.lower()[:200], link

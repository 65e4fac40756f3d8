"""The authorisation hook on every slide route, and the bounded tile caches."""

from __future__ import annotations

from pathlib import Path

from fastapi import Request
from fastapi.testclient import TestClient
from starlette.types import ASGIApp, Receive, Scope, Send

from tests.viewer.conftest import make_settings
from tests.viewer.pyramids import synthetic_rgb, write_pyramid
from tiling.cache import DiskCache, MemoryCache
from tiling.catalog import SlideRef
from tiling.errors import PyramidNotFoundError
from tiling.layout import chunk_key
from tiling.router import allow_all
from viewer.app import create_app


def test_hidden_slides_look_unknown_on_every_route(data_dir: Path, tmp_path: Path) -> None:
    app = create_app(make_settings(data_dir, tmp_path / "cache"))
    calls: list[str] = []

    def only_alpha(request: Request, slide_id: str) -> SlideRef:
        calls.append(slide_id)
        ref = allow_all(request, slide_id)
        if ref.name != "alpha" or request.headers.get("x-user") != "reader":
            raise PyramidNotFoundError("no such slide")
        return ref

    app.state.slide_access = only_alpha
    with TestClient(app) as client:
        ids = {r.name: r.id for r in app.state.catalog.slides()}
        hidden, visible = ids["sparse"], ids["alpha"]
        reader = {"x-user": "reader"}
        assert [s["name"] for s in client.get("/api/slides", headers=reader).json()] == ["alpha"]
        assert client.get("/api/slides").json() == []
        urls = [
            "/api/slides/{}",
            "/api/slides/{}/thumbnail",
            "/slides/{}.dzi",
            "/slides/{}_files/10/0_0.jpeg",  # the fast path asks the hook too
            "/slides/{}_files/10/2_1.jpeg",  # an edge tile: the slow path
            "/iiif/3/{}/info.json",
            "/iiif/3/{}/full/64,/0/default.jpg",
            "/zarr/{}/zarr.json",
            "/zarr/{}/0/c/0/0/0",
        ]
        for url in urls:
            denied = client.get(url.format(hidden), headers=reader)
            unknown = client.get(url.format("f" * 24), headers=reader)
            assert denied.status_code == unknown.status_code == 404, url
            assert (
                denied.json()
                == unknown.json()
                == {
                    "error": "slide_not_found",
                    "detail": "no such slide",
                }
            )
            assert client.get(url.format(visible), headers=reader).status_code == 200, url
            assert client.get(url.format(visible)).status_code == 404, url  # no user header
        assert hidden in calls and visible in calls


def test_computed_tiles_are_cached_on_disk_for_every_worker(
    data_dir: Path, tmp_path: Path, slide_ids: dict[str, str]
) -> None:
    url = f"/slides/{slide_ids['alpha']}_files/10/3_2.jpeg"  # an edge tile: computed
    with TestClient(create_app(make_settings(data_dir, tmp_path / "cache"))) as first:
        body = first.get(url).content
    files = [p for p in (tmp_path / "cache").glob("*/*") if p.is_file()]
    assert len(files) == 1 and files[0].read_bytes() == body
    files[0].write_bytes(b"from the disk cache")  # prove the next worker reads it, not recomputes
    with TestClient(create_app(make_settings(data_dir, tmp_path / "cache"))) as second:
        assert second.get(url).content == b"from the disk cache"


def test_memory_cache_is_bounded_lru() -> None:
    cache = MemoryCache(max_bytes=10)
    cache.put("a", b"1234")
    cache.put("b", b"1234")
    assert cache.get("a") == b"1234"  # a is now the most recent
    cache.put("c", b"1234")  # over 10 bytes: b (least recent) goes
    assert cache.get("b") is None and cache.get("a") is not None and cache.get("c") is not None
    assert cache.size_bytes == 8
    cache.put("huge", b"x" * 11)  # larger than the bound: not kept
    assert cache.get("huge") is None


def test_disk_cache_is_bounded(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path, max_bytes=1000)
    for i in range(30):
        cache.put(f"{i:040x}", b"x" * 100)
    total = sum(p.stat().st_size for p in tmp_path.glob("*/*"))
    assert total <= 1000 and cache.size_bytes == total
    assert cache.get(f"{29:040x}") == b"x" * 100  # the newest survive


def test_stored_chunks_come_from_memory_after_the_first_read(tmp_path: Path) -> None:
    write_pyramid(tmp_path / "data" / "one.zarr", synthetic_rgb(600, 600), tile=256)
    with TestClient(create_app(make_settings(tmp_path / "data", tmp_path / "cache"))) as client:
        (slide,) = client.get("/api/slides").json()
        url = f"/slides/{slide['id']}_files/10/1_1.jpeg"
        first = client.get(url).content
        (tmp_path / "data" / "one.zarr" / chunk_key(0, 1, 1)).unlink()
        assert client.get(url).content == first


def test_authentication_middleware_runs_before_the_fast_path(
    data_dir: Path, tmp_path: Path
) -> None:
    """Middleware added after create_app (accounts' authentication) wraps the tile fast path;
    the hook is asked exactly once per tile, on the fast and on the slow path alike."""
    app = create_app(make_settings(data_dir, tmp_path / "cache"))
    calls: list[str] = []

    def needs_user(request: Request, slide_id: str) -> SlideRef:
        calls.append(getattr(request.state, "user", "anonymous"))
        if getattr(request.state, "user", None) != "reader":
            raise PyramidNotFoundError("no such slide")
        return allow_all(request, slide_id)

    async def authenticate(scope: Scope, receive: Receive, send: Send, inner: ASGIApp) -> None:
        if scope["type"] == "http":
            scope.setdefault("state", {})["user"] = "reader"
        await inner(scope, receive, send)

    class Auth:
        def __init__(self, app: ASGIApp) -> None:
            self.app = app

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            await authenticate(scope, receive, send, self.app)

    app.state.slide_access = needs_user
    app.add_middleware(Auth)
    with TestClient(app) as client:
        slide = next(r.id for r in app.state.catalog.slides() if r.name == "alpha")
        for tile in ("0_0", "3_2"):  # a stored chunk (fast path), an edge tile (route)
            calls.clear()
            assert client.get(f"/slides/{slide}_files/10/{tile}.jpeg").status_code == 200
            assert calls == ["reader"]

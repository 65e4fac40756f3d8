"""Signed tile grants (share/tile_grants.py) and the nginx front (viewer/nginx.py).

The real app with accounts (SQLite) under uvicorn, the real sample slide converted by
``tiling`` (CMU-1-Small-Region, centre caen) and the ruler slide (centre lille), Debian's
nginx started from the configuration ``iain nginx-conf`` writes, and Debian's chromium.
A grant must open exactly one slide's stored chunks, for one session, until it expires --
in IAIN and in nginx alike -- and the viewer must fetch whole chunks through it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser

from share.accounts import Accounts
from share.config import ShareSettings
from share.demo import create_demo_accounts
from share.tile_grants import EXPIRES_COOKIE, SIGNATURE_COOKIE, TileGrants
from share.web import SESSION_COOKIE
from tests.share.conftest import LiveServer
from tests.viewer.conftest import DEMO_PASSWORDS, api_log_in, free_port, make_settings
from viewer.app import create_app
from viewer.nginx import local_stores, render_nginx_conf

PASSWORDS = DEMO_PASSWORDS
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


@dataclass(frozen=True)
class Site:
    url: str
    cmu: str  # centre caen
    ruler: str  # centre lille
    data: Path
    share_dir: Path
    grants: TileGrants
    accounts: Accounts


@contextmanager
def grant_site(viewer_data: Path, tmp: Path, ttl_s: int) -> Iterator[Site]:
    """The real app with accounts and grants of ``ttl_s`` under uvicorn: CMU-1 at caen, the
    ruler slide at lille, the demo accounts."""
    share = ShareSettings(
        data_dir=tmp,
        argon2_time_cost=1,
        argon2_memory_kib=1024,
        view_flush_s=3600,
        tile_grants=True,
        tile_grant_ttl_s=ttl_s,
    )
    app = create_app(make_settings(viewer_data, tmp / "cache"), share)
    with LiveServer(app) as url:
        accounts: Accounts = app.state.accounts
        ids = {name: ref.slide_id for ref, name in accounts.slides()}
        accounts.assign_slide(ids["CMU-1-Small-Region.svs"], "caen")
        accounts.assign_slide(ids["ruler.tif"], "lille")
        create_demo_accounts(accounts)
        yield Site(
            url,
            ids["CMU-1-Small-Region.svs"],
            ids["ruler.tif"],
            viewer_data,
            tmp,
            app.state.tile_grants,
            accounts,
        )


@pytest.fixture(scope="module")
def site(viewer_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with grant_site(viewer_data, tmp_path_factory.mktemp("grants-site"), 120) as made:
        yield made


@contextmanager
def logged_in(base: str, username: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base, timeout=10) as client:
        r = client.post("/api/login", json={"username": username, "password": PASSWORDS[username]})
        assert r.status_code == 200, r.text
        yield client


def chunk_file(site: Site, level: int, row: int, col: int) -> bytes:
    store = local_stores(str(site.data))[site.cmu]
    return (store / str(level) / "c" / "0" / str(row) / str(col)).read_bytes()


def grant_cookies(client: httpx.Client, slide_id: str) -> dict[str, str]:
    r = client.get(f"/api/slides/{slide_id}/tile-grant")
    assert r.status_code == 200, r.text
    assert r.json()["prefix"] == f"/tiles/{slide_id}"
    assert r.headers["cache-control"] == "no-store"
    for header in r.headers.get_list("set-cookie"):  # scoped to this slide's tiles
        assert f"Path=/tiles/{slide_id}/" in header and "HttpOnly" in header
    return {
        SESSION_COOKIE: client.cookies[SESSION_COOKIE],
        EXPIRES_COOKIE: r.cookies[EXPIRES_COOKIE],
        SIGNATURE_COOKIE: r.cookies[SIGNATURE_COOKIE],
    }


def tampered(signature: str) -> str:
    """The signature with its first character changed (it carries six whole bits)."""
    return ("B" if signature[0] == "A" else "A") + signature[1:]


def get_tile(base: str, path: str, cookies: dict[str, str]) -> httpx.Response:
    header = "; ".join(f"{k}={v}" for k, v in cookies.items())
    return httpx.get(base + path, headers={"Cookie": header} if header else {}, timeout=10)


def check_grant_rules(site: Site, base: str) -> None:
    """What a grant opens and what it does not, asked of ``base`` (IAIN or nginx)."""
    with logged_in(site.url, "caen-patho") as caen, logged_in(site.url, "lille-patho") as lille:
        cookies = grant_cookies(caen, site.cmu)
        r = get_tile(base, f"/tiles/{site.cmu}/0/2/3", cookies)
        assert r.status_code == 200
        assert r.content == chunk_file(site, 0, 2, 3)  # the stored bytes, untouched
        assert r.headers["content-type"] == "image/jpeg"
        assert r.headers["cache-control"] == "private, max-age=31536000, immutable"
        denied = {
            "no cookies": {},
            "no grant": {SESSION_COOKIE: cookies[SESSION_COOKIE]},
            "tampered": {**cookies, SIGNATURE_COOKIE: tampered(cookies[SIGNATURE_COOKIE])},
            "later expiry": {**cookies, EXPIRES_COOKIE: str(int(cookies[EXPIRES_COOKIE]) + 60)},
            "other session": {**cookies, SESSION_COOKIE: lille.cookies[SESSION_COOKIE]},
        }
        for why, jar in denied.items():
            assert get_tile(base, f"/tiles/{site.cmu}/0/2/3", jar).status_code == 403, why
        # a grant names its slide: the caen grant does not open the lille slide
        assert get_tile(base, f"/tiles/{site.ruler}/0/0/0", cookies).status_code == 403
        # an expired grant, correctly signed, is refused
        past = int(time.time()) - 5
        expired = {
            **cookies,
            EXPIRES_COOKIE: str(past),
            SIGNATURE_COOKIE: site.grants.sign(past, site.cmu, cookies[SESSION_COOKIE]),
        }
        assert get_tile(base, f"/tiles/{site.cmu}/0/2/3", expired).status_code == 403
        # a chunk outside the grid: not a file, so IAIN answers (nginx passes it on)
        r = get_tile(base, f"/tiles/{site.cmu}/0/900/900", cookies)
        assert r.status_code == 404 and r.json()["error"] == "tile_out_of_range"


def test_grant_opens_one_slide_for_one_session_in_iain(site: Site) -> None:
    check_grant_rules(site, site.url)


def test_grants_only_for_slides_the_user_may_view(site: Site) -> None:
    with logged_in(site.url, "lille-patho") as lille:
        assert lille.get(f"/api/slides/{site.cmu}/tile-grant").status_code == 404
        assert lille.get(f"/api/slides/{site.ruler}/tile-grant").status_code == 200
    assert httpx.get(f"{site.url}/api/slides/{site.cmu}/tile-grant").status_code == 401


def test_each_grant_is_audited(site: Site) -> None:
    with logged_in(site.url, "caen-patho") as caen:
        grant_cookies(caen, site.cmu)
        grant_cookies(caen, site.cmu)
    with logged_in(site.url, "caen-admin") as admin:
        records = admin.get("/api/audit", params={"slide_id": site.cmu}).json()
    views = [
        r
        for r in records
        if r["action"] == "slide.view"
        and r["actor"] == "caen-patho"
        and "tile_grants" in r["detail"]
    ]
    assert views and views[-1]["detail"]["tile_grants"] == 2


@pytest.fixture(scope="module")
def nginx_front(site: Site, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Debian's nginx running what ``iain nginx-conf`` writes, in front of the site."""
    if not Path(NGINX).exists():
        pytest.skip("nginx is not installed (make install adds it)")
    run = tmp_path_factory.mktemp("nginx")
    listen = f"127.0.0.1:{free_port()}"
    conf = run / "nginx.conf"
    conf.write_text(
        render_nginx_conf(
            listen=listen,
            upstream=site.url.removeprefix("http://"),
            stores=local_stores(str(site.data)),
            secret=site.grants.secret,
            run_dir=run,
            workers=1,
        )
    )
    command = [NGINX, "-c", str(conf), "-p", str(run), "-e", str(run / "error.log")]
    subprocess.run([*command, "-t"], check=True, capture_output=True)
    subprocess.run(command, check=True, capture_output=True)
    base = f"http://{listen}"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (run / "error.log").read_text()
            time.sleep(0.05)
        yield base
    finally:
        subprocess.run([*command, "-s", "stop"], capture_output=True)


def test_nginx_checks_the_same_grant(site: Site, nginx_front: str) -> None:
    with logged_in(site.url, "caen-patho") as caen:
        r = get_tile(nginx_front, f"/tiles/{site.cmu}/0/2/3", grant_cookies(caen, site.cmu))
    assert r.status_code == 200 and r.headers["server"] == "nginx"  # sent as a file
    check_grant_rules(site, nginx_front)


@pytest.mark.browser
def test_viewer_fetches_whole_chunks_through_the_grant(
    site: Site, nginx_front: str, browser: Browser
) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    try:
        api_log_in(page, nginx_front, "caen-patho")
        seen: list[tuple[str, int, str | None]] = []
        page.on(
            "response",
            lambda resp: seen.append((resp.url, resp.status, resp.headers.get("server"))),
        )
        page.goto(f"{nginx_front}/view/{site.cmu}")
        page.wait_for_function("document.body.dataset.state === 'open'", timeout=15_000)
        page.evaluate("iain.viewer.viewport.zoomTo(iain.viewer.viewport.imageToViewportZoom(1))")
        page.evaluate("iain.settled()")
        page.wait_for_timeout(500)
        granted = [s for s in seen if "/tiles/" in s[0]]
        assert len(granted) >= 10
        assert all(status == 200 and server == "nginx" for _, status, server in granted)
        # whatever still went through DeepZoom URLs is an edge tile or an unstored level
        slide = page.evaluate("iain.slide")
        dims, size = slide["level_dimensions"], slide["tile_size"]
        top = page.evaluate("iain.viewer.world.getItemAt(0).source.maxLevel")
        for url, _, _ in seen:
            if "_files/" not in url:
                continue
            level, name = url.split("_files/")[1].split("/")
            col, row = (int(v) for v in name.removesuffix(".jpeg").split("_"))
            stored = top - int(level)
            if 0 <= stored < len(dims):
                w, h = dims[stored]
                assert (col + 1) * size > w or (row + 1) * size > h, url
    finally:
        context.close()


def test_nginx_conf_command(site: Site, tmp_path: Path) -> None:
    """`iain nginx-conf` names every local pyramid, embeds the deployment's secret, and
    refuses values that would change the configuration's meaning."""
    env = {"SHARE_DATA_DIR": str(site.share_dir), "PATH": "/usr/bin:/bin"}
    command = [sys.executable, "-m", "viewer.cli", "nginx-conf", "--data", str(site.data)]
    command += ["--run-dir", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    stores = local_stores(str(site.data))
    assert f'"{site.cmu}" "{stores[site.cmu]}";' in done.stdout
    assert f"$cookie_iain_session {site.grants.secret}" in done.stdout
    if Path(NGINX).exists():
        (tmp_path / "nginx.conf").write_text(done.stdout)
        check = [NGINX, "-t", "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path)]
        subprocess.run([*check, "-e", str(tmp_path / "error.log")], check=True)
    evil = subprocess.run(
        [*command, "--listen", "0.0.0.0:80; include /etc/passwd"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert evil.returncode == 2
    assert "cannot be written into an nginx configuration" in evil.stderr
    assert "Traceback" not in evil.stderr


def test_tiles_behind_a_session_are_private_to_shared_caches(site: Site) -> None:
    """With accounts on, a tile answered for one user's session must not be kept by a shared
    cache (a hospital proxy) and handed to someone else: ``private``, never ``public``."""
    with logged_in(site.url, "caen-patho") as caen:
        slide = caen.get(f"/api/slides/{site.cmu}").json()
        top = max(slide["width"], slide["height"]).bit_length()  # DeepZoom's full resolution
        urls = [
            f"/slides/{site.cmu}_files/{top}/0_0.jpeg",  # a stored chunk (fast path)
            f"/slides/{site.cmu}_files/{top}/9_12.jpeg",  # the corner edge tile (computed)
            f"/zarr/{site.cmu}/0/c/0/0/0",
            f"/iiif/3/{site.cmu}/0,0,512,512/256,/0/default.jpg",
        ]
        for url in urls:
            r = caen.get(url)
            assert r.status_code == 200, url
            assert r.headers["cache-control"] == "private, max-age=31536000, immutable", url


@pytest.fixture(scope="module")
def short_grants(viewer_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The site again with 12 s grants: the viewer counts a grant as lapsed 10 s early."""
    with grant_site(viewer_data, tmp_path_factory.mktemp("short-grants"), 12) as made:
        yield made


PAN_URLS_JS = """async ([dx, dy]) => {
  const vp = iain.viewer.viewport;
  const size = vp.getContainerSize();
  const t0 = performance.now();
  vp.panBy(vp.deltaPointsFromPixels(new OpenSeadragon.Point(dx * size.x, dy * size.y)), true);
  await iain.settled();
  return performance.getEntriesByType("resource")
    .filter((e) => e.startTime >= t0).map((e) => e.name);
}"""


@pytest.mark.browser
def test_viewer_falls_back_when_the_grant_lapses_and_renews_it(
    short_grants: Site, browser: Browser
) -> None:
    site = short_grants
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    try:
        page.add_init_script("performance.setResourceTimingBufferSize(100000)")
        api_log_in(page, site.url, "caen-patho")
        grant_requests: list[str] = []
        page.on(
            "request",
            lambda request: (
                grant_requests.append(request.url) if request.url.endswith("/tile-grant") else None
            ),
        )
        page.goto(f"{site.url}/view/{site.cmu}?x_um=250&y_um=700&mag=20&prefetch=0")
        page.wait_for_function("document.body.dataset.state === 'open'", timeout=15_000)
        page.evaluate("iain.settled()")
        page.wait_for_function("iain.grant.pending === null")
        first = page.evaluate("iain.grant.until")
        page.wait_for_function("performance.now() > iain.grant.until + 100")  # lapsed
        asked = len(grant_requests)
        lapsed_pan = page.evaluate(PAN_URLS_JS, [1, 0])
        # the pan still draws, through the session-checked DeepZoom URLs, and asks again
        assert any("_files/" in url for url in lapsed_pan)
        assert not any("/tiles/" in url for url in lapsed_pan)
        page.wait_for_function("iain.grant.pending === null")
        assert len(grant_requests) > asked  # the move asked for a new grant
        page.wait_for_function(f"iain.grant.pending === null && iain.grant.until > {first}")
        renewed_pan = page.evaluate(PAN_URLS_JS, [0, 1])
        assert any("/tiles/" in url for url in renewed_pan)  # whole chunks by the new grant
    finally:
        context.close()

"""Every page's scripts run in Debian's chromium without an error: they share
``static/common.js`` (CSRF token, element builders), which ``viewer.pages._page`` loads first.
The real app with accounts (SQLite) under uvicorn, the caen admin logged in."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser

from tests.viewer.conftest import api_log_in
from tests.viewer.test_tile_grants import Site, grant_site

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def pages_site(viewer_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with grant_site(viewer_data, tmp_path_factory.mktemp("pages-site"), 120) as made:
        yield made


def test_every_page_runs_its_scripts(pages_site: Site, browser: Browser) -> None:
    site = pages_site
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        api_log_in(page, site.url, "caen-admin")
        paths = ["/", f"/view/{site.cmu}", "/audit", "/review", "/collections"]
        paths += ["/shared-with-me", "/opinions", f"/rcp?slides={site.cmu},{site.cmu}"]
        for path in paths:
            response = page.goto(site.url + path)
            assert response is not None and response.status == 200, path
            page.wait_for_load_state("networkidle")
            assert page.evaluate("typeof window.iainCommon.csrf") == "function", path
        assert errors == []
    finally:
        context.close()

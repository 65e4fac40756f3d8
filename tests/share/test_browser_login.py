"""The login page in chromium: a page without a session redirects to /login, a wrong password
shows the error, the right one lands back on the page asked for."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.browser


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_login_page_round_trip(chromium: Any, base_url: str, people: dict[str, str]) -> None:
    context = chromium.new_context()
    page = context.new_page()
    try:
        page.goto(f"{base_url}/viewer/s-caen")
        assert page.url == f"{base_url}/login?next=/viewer/s-caen"
        page.fill("input[name=username]", "caen-patho")
        page.fill("input[name=password]", "not-the-password")
        page.click("button[type=submit]")
        page.wait_for_function("document.getElementById('error').textContent !== ''")
        assert page.text_content("#error") == "invalid username or password"
        page.fill("input[name=password]", people["caen-patho"])
        page.click("button[type=submit]")
        page.wait_for_url(f"{base_url}/viewer/s-caen")
        assert "viewer" in page.content()
        cookies = {c["name"]: c for c in context.cookies()}
        assert cookies["iain_session"]["httpOnly"] is True
        assert page.evaluate("document.cookie").count("iain_session") == 0  # not readable by JS
    finally:
        context.close()

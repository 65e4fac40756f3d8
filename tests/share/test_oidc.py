"""OIDC login (authorization code + PKCE) against a real provider on loopback
(``oidc-provider-mock``): linked subject -> session; unknown subject, replayed state -> 401."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from share import audit
from share.accounts import Accounts
from share.config import ShareSettings
from tests.share.conftest import LiveServer, make_app

# Its own process: the provider (authlib inside) emits deprecation warnings that
# filterwarnings=error would turn into 500s if it ran in the test process.
_PROVIDER = """
import sys
from oidc_provider_mock import run_server_in_thread
with run_server_in_thread(port=0) as server:
    print(server.server_port, flush=True)
    sys.stdin.read()
"""


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log_path = tmp_path_factory.mktemp("oidc") / "provider.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-W", "ignore", "-c", _PROVIDER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.strip().isdigit():
            pytest.fail(f"OIDC provider did not start: {log_path.read_text()[-800:]}")
        port = int(line)
        yield f"http://localhost:{port}"
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def oidc_base(provider: str, accounts: Accounts, settings: ShareSettings) -> Iterator[str]:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    configured = replace(
        settings,
        oidc_issuer=provider,
        oidc_client_id="iain-test",
        oidc_client_secret="not-a-secret",
        oidc_redirect_uri=f"{base}/api/oidc/callback",
    )
    accounts.add_user("dr-oidc", "rouen", "pathologist", None, oidc_subject="alice@chu-rouen")
    with LiveServer(make_app(configured, accounts.db), port=port):
        yield base


def _through_provider(browser: httpx.Client, sub: str) -> httpx.Response:
    """Start at IAIN, pick ``sub`` on the provider's form, come back to the callback URL."""
    start = browser.get("/api/oidc/login", params={"next": "/api/me"})
    assert start.status_code == 303
    authorize = start.headers["location"]
    query = parse_qs(urlsplit(authorize).query)
    assert query["code_challenge_method"] == ["S256"] and query["response_type"] == ["code"]
    assert "code_verifier" not in authorize  # the verifier never leaves the server
    consent = httpx.post(authorize, data={"sub": sub}, follow_redirects=False)
    assert consent.status_code in (302, 303), consent.text
    callback = consent.headers["location"]
    assert callback.startswith(str(browser.base_url) + "/api/oidc/callback?")
    return browser.get(callback)


def test_oidc_login_opens_a_session(oidc_base: str, accounts: Accounts) -> None:
    with httpx.Client(base_url=oidc_base) as browser:
        done = _through_provider(browser, "alice@chu-rouen")
        assert done.status_code == 303 and done.headers["location"] == "/api/me"
        me = browser.get("/api/me").json()
        assert (me["username"], me["centre"], me["role"]) == ("dr-oidc", "rouen", "pathologist")
        assert "HttpOnly" in done.headers["set-cookie"]
    logins = [r for r in audit.records(accounts.db, centre_id="rouen") if r["action"] == "login"]
    assert [(r["actor"], r["outcome"], r["detail"]["method"]) for r in logins] == [
        ("dr-oidc", "ok", "oidc")
    ]


def test_oidc_unknown_subject_and_replay_are_refused(oidc_base: str) -> None:
    with httpx.Client(base_url=oidc_base) as browser:
        refused = _through_provider(browser, "mallory@elsewhere")
        assert refused.status_code == 401 and refused.json()["error"] == "oidc_failed"
        assert browser.get("/api/me").status_code == 401
        start = browser.get("/api/oidc/login")
        consent = httpx.post(start.headers["location"], data={"sub": "alice@chu-rouen"})
        callback = consent.headers["location"]
        assert browser.get(callback).status_code == 303
        replay = browser.get(callback)  # the state is single use
        assert replay.status_code == 401 and "expired" in replay.json()["detail"]
        forged = browser.get("/api/oidc/callback", params={"code": "x", "state": "made-up"})
        assert forged.status_code == 401


def test_oidc_off_unless_configured(client: httpx.Client) -> None:
    assert client.get("/api/oidc/login").status_code == 404

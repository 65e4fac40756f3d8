"""Password login, cookies, CSRF, logout, timeouts and rate limiting over real HTTP."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, update

from share.accounts import Accounts
from share.config import ShareSettings
from share.errors import SessionExpiredError
from share.models import Session, User
from share.web import CSRF_HEADER, SESSION_COOKIE
from tests.share.conftest import LiveServer, login, make_app


def test_login_sets_httponly_samesite_cookie_and_me(
    client: httpx.Client, people: dict[str, str]
) -> None:
    response = client.post(
        "/api/login", json={"username": "caen-patho", "password": people["caen-patho"]}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["username"] == "caen-patho" and body["centre"] == "caen"
    assert body["role"] == "pathologist" and len(body["csrf_token"]) > 20
    set_cookie = [v for k, v in response.headers.multi_items() if k == "set-cookie"]
    session_cookie = next(c for c in set_cookie if c.startswith(SESSION_COOKIE + "="))
    assert "HttpOnly" in session_cookie and "SameSite=lax" in session_cookie
    assert "Secure" not in session_cookie  # plain http on loopback
    me = client.get("/api/me")
    assert me.status_code == 200 and me.json()["username"] == "caen-patho"


def test_secure_cookie_when_configured(
    accounts: Accounts, settings: ShareSettings, people: dict[str, str]
) -> None:
    app = make_app(replace(settings, secure_cookies=True), accounts.db)
    with LiveServer(app) as url, httpx.Client(base_url=url) as c:
        creds = {"username": "caen-patho", "password": people["caen-patho"]}
        response = c.post("/api/login", json=creds)
        assert "Secure" in response.headers["set-cookie"]


def test_session_stored_hashed_not_as_token(
    client: httpx.Client, accounts: Accounts, people: dict[str, str]
) -> None:
    login(client, "caen-patho")
    token = client.cookies[SESSION_COOKIE]
    with accounts.db.session() as s:
        ids = list(s.scalars(select(Session.id)))
    assert len(ids) == 1 and token not in ids


def test_bad_credentials_are_401_with_one_message(
    client: httpx.Client, people: dict[str, str]
) -> None:
    for username, password in [("caen-patho", "wrong-password"), ("nobody", "whatever-pass")]:
        response = client.post("/api/login", json={"username": username, "password": password})
        assert response.status_code == 401
        assert response.json() == {
            "error": "invalid_credentials",
            "detail": "invalid username or password",
        }
        assert SESSION_COOKIE not in client.cookies


def test_malformed_login_is_422(client: httpx.Client) -> None:
    bodies: list[object] = [
        {},
        {"username": "x"},
        {"username": "", "password": "p"},
        {"username": 3, "password": []},
        {"username": "a" * 200, "password": "p"},
        {"username": "x", "password": "p" * 5000},
        [],
        None,
    ]
    for body in bodies:
        assert client.post("/api/login", json=body).status_code == 422, body
    assert client.post("/api/login", content=b"not json").status_code == 422


def test_rate_limit_per_username_and_ip_in_database(
    client: httpx.Client, accounts: Accounts, people: dict[str, str]
) -> None:
    for _ in range(accounts.settings.login_max_failures):
        bad = {"username": "caen-patho", "password": "wrong-password"}
        assert client.post("/api/login", json=bad).status_code == 401
    # Even the right password is refused now, with Retry-After.
    response = client.post(
        "/api/login", json={"username": "caen-patho", "password": people["caen-patho"]}
    )
    assert response.status_code == 429
    assert response.json()["error"] == "login_rate_limited"
    assert 0 < int(response.headers["retry-after"]) <= accounts.settings.login_window_s
    # Another account from the same address is unaffected.
    login(client, "lille-patho")
    # The count lives in the database: a second worker process sees it too.
    other_worker = Accounts(accounts.db, accounts.settings)
    with pytest.raises(Exception, match="too many failed logins"):
        other_worker.authenticate("caen-patho", people["caen-patho"], "127.0.0.1")


def test_csrf_required_on_state_changing_calls(
    client: httpx.Client, people: dict[str, str]
) -> None:
    headers = login(client, "caen-patho")
    no_token = client.post("/api/logout")
    assert no_token.status_code == 403 and no_token.json()["error"] == "csrf_failed"
    wrong = client.post("/api/logout", headers={CSRF_HEADER: "x" * 32})
    assert wrong.status_code == 403
    assert client.get("/api/me").status_code == 200  # still logged in
    assert client.post("/api/logout", headers=headers).status_code == 200


def test_logout_invalidates_session_server_side(
    client: httpx.Client, people: dict[str, str]
) -> None:
    headers = login(client, "caen-patho")
    token = client.cookies[SESSION_COOKIE]
    assert client.post("/api/logout", headers=headers).status_code == 200
    # Replaying the old cookie (stolen before logout) does not work.
    client.cookies.set(SESSION_COOKIE, token)
    response = client.get("/api/me")
    assert response.status_code == 401 and response.json()["error"] == "session_expired"


def test_revocation_reaches_other_workers_within_cache_delay(
    accounts: Accounts, settings: ShareSettings, people: dict[str, str]
) -> None:
    worker_a = Accounts(accounts.db, replace(settings, session_cache_s=0.3))
    worker_b = Accounts(accounts.db, replace(settings, session_cache_s=0.3))
    principal = worker_a.authenticate("caen-patho", people["caen-patho"], "10.0.0.1")
    token, info = worker_a.create_session(principal, "10.0.0.1")
    assert worker_b.resolve_session(token).principal.username == "caen-patho"
    worker_a.revoke_session(info.session_id)
    with pytest.raises(SessionExpiredError):
        worker_a.resolve_session(token)  # same worker: at once
    time.sleep(0.35)
    assert worker_b.cached_session(token) is None
    with pytest.raises(SessionExpiredError):
        worker_b.resolve_session(token)  # other worker: after its cache delay


def test_idle_and_absolute_timeouts(
    accounts: Accounts, settings: ShareSettings, people: dict[str, str]
) -> None:
    acc = Accounts(accounts.db, replace(settings, session_cache_s=0, session_touch_s=0))
    principal = acc.principal("caen-patho")
    token, info = acc.create_session(principal, "ip")
    acc.resolve_session(token)
    past = info.created_at.replace(year=info.created_at.year - 1)
    with accounts.db.session() as s:
        s.execute(update(Session).where(Session.id == info.session_id).values(last_seen_at=past))
    with pytest.raises(SessionExpiredError, match="idle"):
        acc.resolve_session(token)
    token2, info2 = acc.create_session(principal, "ip")
    with accounts.db.session() as s:
        s.execute(update(Session).where(Session.id == info2.session_id).values(created_at=past))
    with pytest.raises(SessionExpiredError, match="maximum age"):
        acc.resolve_session(token2)


def test_deactivated_user_loses_session(
    accounts: Accounts, settings: ShareSettings, people: dict[str, str]
) -> None:
    acc = Accounts(accounts.db, replace(settings, session_cache_s=0))
    token, _ = acc.create_session(acc.principal("caen-patho"), "ip")
    acc.resolve_session(token)
    with accounts.db.session() as s:
        s.execute(update(User).where(User.username == "caen-patho").values(active=False))
    with pytest.raises(SessionExpiredError):
        acc.resolve_session(token)


def test_two_workers_share_sessions(
    app: FastAPI,
    accounts: Accounts,
    settings: ShareSettings,
    people: dict[str, str],
    new_client: Callable[[], httpx.Client],
) -> None:
    """A session opened on one server process is honoured by another on the same database."""
    browser = new_client()
    login(browser, "caen-patho")
    with LiveServer(make_app(settings, accounts.db)) as other_url:
        response = httpx.get(f"{other_url}/api/me", cookies=browser.cookies)
    assert response.status_code == 200 and response.json()["username"] == "caen-patho"


def test_failed_and_ok_logins_counted(
    client: httpx.Client, accounts: Accounts, people: dict[str, str]
) -> None:
    client.post("/api/login", json={"username": "caen-patho", "password": "nope-nope"})
    login(client, "caen-patho")
    from share.models import LoginAttempt

    with accounts.db.session() as s:
        rows = s.execute(select(LoginAttempt.ok, func.count()).group_by(LoginAttempt.ok)).all()
    assert dict((bool(k), v) for k, v in rows) == {False: 1, True: 1}

"""The client address behind a proxy: believed only from trusted proxies, over real HTTP."""

from __future__ import annotations

import json

import httpx
import pytest
from sqlalchemy import select

from share.accounts import Accounts
from share.client_address import client_address, parse_networks
from share.config import ShareSettings
from share.errors import InvalidInputError
from share.models import AuditRecord, LoginAttempt
from tests.share.conftest import LiveServer, make_app, settings_with
from viewer.config import ServerSettings
from viewer.serve import uvicorn_config

LOCAL = parse_networks(["127.0.0.1", "10.0.0.0/8", "::1"])


@pytest.mark.parametrize(
    ("peer", "forwarded", "want"),
    [
        ("203.0.113.7", "198.51.100.1", "203.0.113.7"),  # untrusted peer: its header is a lie
        ("127.0.0.1", None, "127.0.0.1"),  # a trusted peer that forwards nobody
        ("127.0.0.1", "198.51.100.1", "198.51.100.1"),
        ("127.0.0.1", "6.6.6.6, 198.51.100.1", "198.51.100.1"),  # the client's own claim: no
        ("127.0.0.1", "198.51.100.1, 10.1.2.3", "198.51.100.1"),  # two proxies deep
        ("::1", "2001:db8::7", "2001:db8::7"),
        ("127.0.0.1", "10.0.0.5, 10.1.2.3", "10.0.0.5"),  # every hop trusted: the first
        ("127.0.0.1", "not-an-ip", "127.0.0.1"),  # garbage: the proxy that passed it on
        (None, "198.51.100.1", "unknown"),
    ],
)
def test_client_address(peer: str | None, forwarded: str | None, want: str) -> None:
    assert client_address(peer, forwarded, LOCAL) == want


def test_a_bad_trusted_proxy_is_named_at_start_up() -> None:
    with pytest.raises(InvalidInputError, match="'nginx' is not an IP address"):
        ShareSettings.from_env({"SHARE_TRUSTED_PROXIES": "127.0.0.1,nginx"})
    settings = ShareSettings.from_env({"SHARE_TRUSTED_PROXIES": "127.0.0.1, ::1"})
    assert [str(n) for n in settings.trusted_networks] == ["127.0.0.1/32", "::1/128"]


def _fail_logins(client: httpx.Client, times: int, forwarded: list[str]) -> list[int]:
    bad = {"username": "caen-patho", "password": "wrong-password"}
    return [
        client.post("/api/login", json=bad, headers={"x-forwarded-for": forwarded[i]}).status_code
        for i in range(times)
    ]


def test_behind_a_trusted_proxy_one_client_cannot_lock_out_another(
    accounts: Accounts, settings: ShareSettings, people: dict[str, str]
) -> None:
    trusting = settings_with(settings, trusted_proxies=("127.0.0.1",))
    attacker, victim = "203.0.113.7", "198.51.100.9"
    with LiveServer(make_app(trusting, accounts.db)) as url, httpx.Client(base_url=url) as c:
        failures = trusting.login_max_failures
        assert _fail_logins(c, failures + 1, [attacker] * (failures + 1))[-1] == 429
        good = {"username": "caen-patho", "password": people["caen-patho"]}
        assert c.post("/api/login", json=good, headers={"x-forwarded-for": victim}).is_success
    with accounts.db.session() as s:
        ips = s.scalars(select(LoginAttempt.ip).order_by(LoginAttempt.id)).all()
        details = s.scalars(select(AuditRecord.detail).where(AuditRecord.action == "login"))
        audited = [json.loads(d)["ip"] for d in details]
    assert ips == [attacker] * failures + [victim]  # the refused attempt is not counted
    assert audited[-1] == victim and set(audited) == {attacker, victim}


def test_without_trusted_proxies_the_header_cannot_dodge_the_rate_limit(
    client: httpx.Client, accounts: Accounts
) -> None:
    failures = accounts.settings.login_max_failures
    forged = [f"198.51.100.{i}" for i in range(failures + 1)]  # a new "address" per attempt
    assert _fail_logins(client, failures + 1, forged)[-1] == 429
    with accounts.db.session() as s:
        assert set(s.scalars(select(LoginAttempt.ip))) == {"127.0.0.1"}


def test_uvicorn_leaves_the_header_to_iain() -> None:
    """uvicorn's default believes X-Forwarded-For from any 127.0.0.1 peer, and would hand the
    app the forged address before SHARE_TRUSTED_PROXIES is consulted (granian does not)."""
    assert uvicorn_config(ServerSettings(server="uvicorn")).proxy_headers is False

"""OIDC login (authorization code + PKCE S256) against a hospital Keycloak / Pro Santé Connect.

``GET /api/oidc/login`` stores (state, nonce, PKCE verifier) in the database -- any worker can
take the callback -- and redirects to the provider. ``GET /api/oidc/callback`` consumes the
state once, swaps the code for tokens (with the verifier), verifies the ID token's signature
(provider JWKS), issuer, audience, expiry and nonce, then opens the same server-side session
as a password login for the user linked to that ``sub`` (``iain user add --oidc-subject``).
An unknown ``sub`` gets no account: deny by default.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy import delete, select

from share import audit
from share.accounts import Accounts, SessionInfo, now_utc
from share.authz import Principal, Role
from share.errors import AuthenticationError, InvalidInputError
from share.models import OidcPending, User

__all__ = ["OidcConfig", "OidcError", "OidcLogin"]

logger = logging.getLogger(__name__)

PENDING_TTL = timedelta(minutes=10)


class OidcError(AuthenticationError):
    code = "oidc_failed"


@dataclass(frozen=True)
class OidcConfig:
    issuer: str
    client_id: str
    client_secret: str
    redirect_uri: str  # our /api/oidc/callback as the provider sees it
    scope: str = "openid profile email"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _safe_next(next_url: str) -> str:
    # Only same-site paths: an open redirect after login is a phishing aid.
    return next_url if next_url.startswith("/") and not next_url.startswith("//") else "/"


class OidcLogin:
    """The two halves of the login; provider metadata and keys are fetched once, lazily."""

    def __init__(self, accounts: Accounts, config: OidcConfig) -> None:
        self.accounts = accounts
        self.config = config
        self._meta: dict[str, Any] | None = None
        self._keys: KeySet | None = None
        self._keys_at = 0.0

    def _metadata(self) -> dict[str, Any]:
        if self._meta is None:
            url = self.config.issuer.rstrip("/") + "/.well-known/openid-configuration"
            try:
                response = httpx.get(url, timeout=10)
                response.raise_for_status()
            except httpx.HTTPError as exc:
                raise OidcError(f"identity provider unreachable: {type(exc).__name__}") from exc
            self._meta = dict(response.json())
        return self._meta

    def _keyset(self, refresh: bool = False) -> KeySet:
        if self._keys is None or (refresh and time.monotonic() - self._keys_at > 60):
            response = httpx.get(self._metadata()["jwks_uri"], timeout=10)
            self._keys = KeySet.import_key_set(response.json())
            self._keys_at = time.monotonic()
        return self._keys

    def start(self, next_url: str) -> str:
        """Record a pending login; returns the provider URL to redirect the browser to."""
        state, nonce, verifier = (secrets.token_urlsafe(32) for _ in range(3))
        with self.accounts.db.session() as s:
            s.execute(delete(OidcPending).where(OidcPending.created_at < now_utc() - PENDING_TTL))
            s.add(
                OidcPending(
                    state=state,
                    nonce=nonce,
                    code_verifier=verifier,
                    next_url=_safe_next(next_url)[:500],
                    created_at=now_utc(),
                )
            )
        query = {
            "response_type": "code",
            "client_id": self.config.client_id,
            "redirect_uri": self.config.redirect_uri,
            "scope": self.config.scope,
            "state": state,
            "nonce": nonce,
            "code_challenge": _b64(hashlib.sha256(verifier.encode()).digest()),
            "code_challenge_method": "S256",
        }
        return f"{self._metadata()['authorization_endpoint']}?{urlencode(query)}"

    def finish(self, code: str, state: str, ip: str) -> tuple[str, SessionInfo, str]:
        """Callback: returns (session token, session, next URL) or raises OidcError."""
        with self.accounts.db.session() as s:
            pending = s.get(OidcPending, state)
            if pending is not None:
                s.delete(pending)  # single use, whatever happens next
        if pending is None or now_utc() - _aware(pending.created_at) > PENDING_TTL:
            raise OidcError("login state unknown or expired; start again")
        meta = self._metadata()
        try:
            response = httpx.post(
                meta["token_endpoint"],
                data={
                    "grant_type": "authorization_code",
                    "code": code,
                    "redirect_uri": self.config.redirect_uri,
                    "client_id": self.config.client_id,
                    "client_secret": self.config.client_secret,
                    "code_verifier": pending.code_verifier,
                },
                timeout=10,
            )
        except httpx.HTTPError as exc:
            raise OidcError(f"token endpoint unreachable: {type(exc).__name__}") from exc
        if response.status_code != 200 or "id_token" not in response.json():
            raise OidcError(f"token endpoint refused the code ({response.status_code})")
        claims = self._verify(str(response.json()["id_token"]), pending.nonce)
        principal = self._principal(str(claims["sub"]), ip)
        token, info = self.accounts.create_session(principal, ip)
        return token, info, pending.next_url

    def _verify(self, id_token: str, nonce: str) -> dict[str, Any]:
        try:
            try:
                decoded = jwt.decode(id_token, self._keyset())
            except (JoseError, ValueError):
                decoded = jwt.decode(id_token, self._keyset(refresh=True))  # key rotation
            registry = jwt.JWTClaimsRegistry(
                iss={"essential": True, "value": self._metadata()["issuer"]},
                aud={"essential": True, "value": self.config.client_id},
                exp={"essential": True},
                sub={"essential": True},
                nonce={"essential": True, "value": nonce},
            )
            registry.validate(decoded.claims)
        except (JoseError, ValueError) as exc:
            raise OidcError(f"ID token rejected: {type(exc).__name__}") from exc
        return dict(decoded.claims)

    def _principal(self, sub: str, ip: str) -> Principal:
        with self.accounts.db.session() as s:
            user = s.scalar(select(User).where(User.oidc_subject == sub))
            ok = user is not None and user.active
            audit.append(
                s,
                actor=user.username if user is not None else f"oidc:{sub[:100]}",
                action="login",
                outcome="ok" if ok else "failed",
                centre_id=user.centre_id if user is not None else None,
                detail={"ip": ip, "method": "oidc"},
            )
            if not ok or user is None:
                raise OidcError("no active IAIN account is linked to this identity")
            return Principal(user.id, user.username, user.centre_id, Role(user.role))


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def link_subject(accounts: Accounts, username: str, sub: str) -> None:
    """Link an existing account to an OIDC subject."""
    if not sub or len(sub) > 255:
        raise InvalidInputError("OIDC subject must be 1-255 characters")
    with accounts.db.session() as s:
        user = s.scalar(select(User).where(User.username == username))
        if user is None:
            raise InvalidInputError(f"user {username!r} not found")
        user.oidc_subject = sub

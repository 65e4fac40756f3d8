"""Node-to-node request signing: short-lived, audience-bound Ed25519 JWTs (PyJWT + cryptography).

Every request one centre's node makes to another carries ``Authorization: Bearer <token>``
where the token is a JWS (``alg`` EdDSA, ``typ`` ``iain-node+jwt``) with claims

``iss`` the calling node, ``aud`` the called node, ``sub`` the user at the calling node on whose
behalf it asks, ``iat``/``nbf``/``exp`` (at most :data:`MAX_TOKEN_TTL_S` apart), ``jti`` (unique,
for replay detection), ``htm``/``htu`` the HTTP method and path (+query) it is valid for, and
``bh`` the base64url SHA-256 of the body when there is one.

A token is therefore useless for another node, another URL, another body, or after a minute.
No cryptography is implemented here: PyJWT signs and verifies; this module only decides which
claims are required and turns each failure into a specific :mod:`share.federation_errors` class.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from share.federation_errors import (
    BadSignatureError,
    MalformedTokenError,
    NodeKeyError,
    ReplayedTokenError,
    RequestAuthError,
    RequestMismatchError,
    TokenExpiredError,
    TokenLifetimeError,
    UnknownIssuerError,
    WrongAudienceError,
)

__all__ = [
    "CLOCK_SKEW_S",
    "DEFAULT_TTL_S",
    "MAX_TOKEN_TTL_S",
    "TOKEN_TYPE",
    "NodeKey",
    "ReplayCache",
    "body_hash",
    "load_public_key",
    "public_key_pem",
    "sign_request",
    "verify_request",
]

TOKEN_TYPE = "iain-node+jwt"
MAX_TOKEN_TTL_S = 60  # a token never outlives a minute, so revocation is felt within it
DEFAULT_TTL_S = 30
CLOCK_SKEW_S = 5  # tolerated difference between two centres' clocks
_ALGORITHM = "EdDSA"
_RESERVED = frozenset({"iss", "aud", "sub", "iat", "nbf", "exp", "jti", "htm", "htu", "bh"})


@dataclass(frozen=True, slots=True)
class NodeKey:
    """This node's identity: its name (the ``iss`` of what it signs) and Ed25519 private key."""

    node: str
    private_key: Ed25519PrivateKey

    @classmethod
    def generate(cls, node: str) -> NodeKey:
        return cls(node, Ed25519PrivateKey.generate())

    @classmethod
    def from_pem(cls, node: str, pem: bytes) -> NodeKey:
        """Load a PKCS#8 PEM Ed25519 private key (unencrypted: protect the file, 0600)."""
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as exc:
            raise NodeKeyError(f"node {node}: private key is not a PEM key ({exc})") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise NodeKeyError(f"node {node}: private key must be Ed25519")
        return cls(node, key)

    @classmethod
    def from_file(cls, node: str, path: Path | str) -> NodeKey:
        try:
            pem = Path(path).read_bytes()
        except OSError as exc:
            raise NodeKeyError(
                f"node {node}: cannot read private key file ({exc.strerror})"
            ) from exc
        return cls.from_pem(node, pem)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> NodeKey:
        """``SHARE_NODE_NAME`` plus ``SHARE_NODE_KEY`` (PEM text) or ``SHARE_NODE_KEY_FILE``."""
        env = os.environ if environ is None else environ
        node = env.get("SHARE_NODE_NAME", "")
        if not node:
            raise NodeKeyError("SHARE_NODE_NAME is not set")
        if env.get("SHARE_NODE_KEY"):
            return cls.from_pem(node, env["SHARE_NODE_KEY"].encode())
        if env.get("SHARE_NODE_KEY_FILE"):
            return cls.from_file(node, env["SHARE_NODE_KEY_FILE"])
        raise NodeKeyError("set SHARE_NODE_KEY or SHARE_NODE_KEY_FILE")

    def private_pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    def public_pem(self) -> str:
        """What the other centres put in their peers file for this node."""
        return public_key_pem(self.public_key)

    def public_jwk(self) -> dict[str, str]:
        """The public key as an OKP JWK with its RFC 7638 thumbprint as ``kid``."""
        raw = self.public_key.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        canonical = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":"))
        kid = base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=")
        return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid.decode(), "use": "sig"}


def public_key_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def load_public_key(text: str | Mapping[str, Any]) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM text or an OKP JWK (dict or JSON text).

    Raises ``ValueError`` with a one-line reason (callers name the peer).
    """
    try:
        if isinstance(text, str) and "-----BEGIN" in text:
            key: object = serialization.load_pem_public_key(text.encode())
        else:
            jwk = json.loads(text) if isinstance(text, str) else dict(text)
            if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
                raise ValueError("JWK must be kty OKP, crv Ed25519")
            key = jwt.PyJWK(jwk, algorithm=_ALGORITHM).key
    except (ValueError, TypeError, jwt.PyJWTError) as exc:
        raise ValueError(f"not an Ed25519 public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("public key must be Ed25519")
    return key


def body_hash(body: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(body).digest()).rstrip(b"=").decode()


def sign_request(
    key: NodeKey,
    method: str,
    path: str,
    audience: str,
    subject: str,
    claims: Mapping[str, Any] | None = None,
    *,
    body: bytes | None = None,
    ttl_s: int = DEFAULT_TTL_S,
    now: float | None = None,
) -> str:
    """A token for ONE request ``method path`` to node ``audience`` on behalf of ``subject``.

    ``claims`` adds context (e.g. ``groups`` of the subject); reserved names cannot be overridden.
    """
    if not 0 < ttl_s <= MAX_TOKEN_TTL_S:
        raise ValueError(f"ttl_s {ttl_s} not in 1..{MAX_TOKEN_TTL_S}")
    if not path.startswith("/"):
        raise ValueError("path must be the request target, starting with '/'")
    extra = dict(claims or {})
    clash = _RESERVED & extra.keys()
    if clash:
        raise ValueError(f"claims may not override {sorted(clash)}")
    issued = int(time.time() if now is None else now)
    payload: dict[str, Any] = {
        **extra,
        "iss": key.node,
        "aud": audience,
        "sub": subject,
        "iat": issued,
        "nbf": issued,
        "exp": issued + ttl_s,
        "jti": uuid.uuid4().hex,
        "htm": method.upper(),
        "htu": path,
    }
    if body:
        payload["bh"] = body_hash(body)
    headers = {"typ": TOKEN_TYPE, "kid": _kid(key)}
    return jwt.encode(payload, key.private_key, algorithm=_ALGORITHM, headers=headers)


@functools.lru_cache(maxsize=64)
def _kid(key: NodeKey) -> str:
    return key.public_jwk()["kid"]


class ReplayCache:
    """Token ids seen until they expire; thread-safe; bounded (full = refuse, never forget).

    Expired ids are swept at most every few seconds, so memory follows the live request rate
    (about rate x ``MAX_TOKEN_TTL_S`` entries), not the total ever seen.
    """

    _SWEEP_EVERY_S = 5.0

    def __init__(self, max_entries: int = 1_000_000) -> None:
        self._seen: dict[tuple[str, str], int] = {}
        self._max = max_entries
        self._lock = threading.Lock()
        self._next_sweep = 0.0

    def check_and_add(self, issuer: str, jti: str, exp: int, now: float) -> None:
        with self._lock:
            if now >= self._next_sweep or len(self._seen) >= self._max:
                self._seen = {k: e for k, e in self._seen.items() if e + CLOCK_SKEW_S > now}
                self._next_sweep = now + self._SWEEP_EVERY_S
            if (issuer, jti) in self._seen:
                raise ReplayedTokenError(f"token {jti[:8]}… from {issuer} was already used")
            if len(self._seen) >= self._max:
                raise RequestAuthError("too many live tokens; retry shortly")
            self._seen[(issuer, jti)] = exp

    def __len__(self) -> int:
        return len(self._seen)


def verify_request(
    token: str,
    method: str,
    path: str,
    expected_audience: str,
    peers: Mapping[str, Ed25519PublicKey],
    *,
    body: bytes | None = None,
    now: float | None = None,
    replay_cache: ReplayCache | None = None,
) -> dict[str, Any]:
    """Check ``token`` for the request ``method path`` received by ``expected_audience``.

    Returns the claims, or raises a :class:`RequestAuthError` subclass naming what failed.
    ``peers`` maps each known node name to its public key.
    """
    clock = time.time() if now is None else now
    try:
        unverified_token = jwt.decode_complete(token, options={"verify_signature": False})
        header, unverified = unverified_token["header"], unverified_token["payload"]
    except jwt.PyJWTError as exc:
        raise MalformedTokenError(f"not a signed token ({exc})") from exc
    if header.get("alg") != _ALGORITHM or header.get("typ") != TOKEN_TYPE:
        raise MalformedTokenError(f"token must be alg {_ALGORITHM}, typ {TOKEN_TYPE}")
    issuer = unverified.get("iss")
    if not isinstance(issuer, str) or issuer not in peers:
        raise UnknownIssuerError(f"issuer {str(issuer)[:64]!r} is not a configured peer")
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            peers[issuer],
            algorithms=[_ALGORITHM],
            audience=expected_audience,
            issuer=issuer,
            options={
                "require": ["iss", "aud", "sub", "iat", "exp", "jti", "htm", "htu"],
                "verify_exp": False,  # checked below against ``now``, with our skew
                "verify_nbf": False,
                "verify_iat": False,
            },
        )
    except jwt.InvalidSignatureError as exc:
        raise BadSignatureError(f"signature does not verify with {issuer}'s key") from exc
    except jwt.InvalidAudienceError as exc:
        raise WrongAudienceError(f"token is not for {expected_audience}") from exc
    except jwt.PyJWTError as exc:
        raise MalformedTokenError(f"invalid token ({exc})") from exc
    if claims["aud"] != expected_audience:  # a list of audiences is not accepted
        raise WrongAudienceError(f"token must name only {expected_audience} as audience")
    _check_times(claims, clock)
    if claims["htm"] != method.upper() or claims["htu"] != path:
        raise RequestMismatchError("token was signed for another method or path")
    if (claims.get("bh") or None) != (body_hash(body) if body else None):
        raise RequestMismatchError("token was signed for another body")
    if not isinstance(claims["sub"], str) or not claims["sub"]:
        raise MalformedTokenError("sub must be a non-empty string")
    if replay_cache is not None:
        replay_cache.check_and_add(issuer, str(claims["jti"]), int(claims["exp"]), clock)
    return claims


def _check_times(claims: Mapping[str, Any], now: float) -> None:
    values = [claims.get(name) for name in ("iat", "exp")]
    nbf = claims.get("nbf", claims["iat"])
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in [*values, nbf]):
        raise MalformedTokenError("iat, nbf and exp must be integers")
    iat, exp = int(claims["iat"]), int(claims["exp"])
    if exp - iat > MAX_TOKEN_TTL_S:
        raise TokenLifetimeError(f"token lifetime {exp - iat} s exceeds {MAX_TOKEN_TTL_S} s")
    if now >= exp + CLOCK_SKEW_S:
        raise TokenExpiredError(f"token expired {int(now - exp)} s ago")
    if now + CLOCK_SKEW_S < min(iat, int(nbf)):
        raise TokenExpiredError("token is not valid yet (issued in the future)")

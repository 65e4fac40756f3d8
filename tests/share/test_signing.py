"""Signed node-to-node requests: the happy path and every rejection."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

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
from share.signing import (
    MAX_TOKEN_TTL_S,
    TOKEN_TYPE,
    NodeKey,
    ReplayCache,
    load_public_key,
    sign_request,
    verify_request,
)

PATH = "/federation/shares/s1/tiles/0/1_2.jpeg"
Peers = dict[str, Ed25519PublicKey]


@pytest.fixture(scope="module")
def caen() -> NodeKey:
    return NodeKey.generate("caen")


@pytest.fixture(scope="module")
def lille() -> NodeKey:
    return NodeKey.generate("lille")


@pytest.fixture(scope="module")
def peers(lille: NodeKey) -> dict[str, Ed25519PublicKey]:
    """What Caen knows: Lille's public key."""
    return {"lille": load_public_key(lille.public_pem())}


def _token(lille: NodeKey, **kwargs: object) -> str:
    args: dict[str, object] = {"audience": "caen", "subject": "dr.martin"}
    args.update(kwargs)
    return sign_request(lille, "GET", PATH, **args)  # type: ignore[arg-type]


def test_round_trip_carries_subject_and_context(lille: NodeKey, peers: Peers) -> None:
    token = _token(lille, claims={"groups": ["uropath"]})
    claims = verify_request(token, "GET", PATH, "caen", peers, replay_cache=ReplayCache())
    assert (claims["iss"], claims["aud"], claims["sub"]) == ("lille", "caen", "dr.martin")
    assert claims["groups"] == ["uropath"]
    assert 0 < claims["exp"] - claims["iat"] <= MAX_TOKEN_TTL_S
    assert jwt.get_unverified_header(token)["typ"] == TOKEN_TYPE


def test_expired(lille: NodeKey, peers: Peers) -> None:
    token = _token(lille, now=time.time() - 120, ttl_s=60)
    with pytest.raises(TokenExpiredError):
        verify_request(token, "GET", PATH, "caen", peers)
    fresh = _token(lille, ttl_s=10)
    with pytest.raises(TokenExpiredError):  # same token, verified 60 s later
        verify_request(fresh, "GET", PATH, "caen", peers, now=time.time() + 60)


def test_issued_in_the_future(lille: NodeKey, peers: Peers) -> None:
    with pytest.raises(TokenExpiredError, match="not valid yet"):
        verify_request(_token(lille, now=time.time() + 30), "GET", PATH, "caen", peers)


def test_wrong_audience(lille: NodeKey, peers: Peers) -> None:
    with pytest.raises(WrongAudienceError):
        verify_request(_token(lille, audience="rouen"), "GET", PATH, "caen", peers)


def test_unknown_issuer(caen: NodeKey, peers: Peers) -> None:
    token = sign_request(NodeKey.generate("mallory"), "GET", PATH, "caen", "x")
    with pytest.raises(UnknownIssuerError):
        verify_request(token, "GET", PATH, "caen", peers)


def test_bad_signature_key_substitution(peers: Peers) -> None:
    """A token claiming to be Lille but signed with another key."""
    impostor = NodeKey.generate("lille")
    with pytest.raises(BadSignatureError):
        verify_request(_token(impostor), "GET", PATH, "caen", peers)


def test_tampered_payload(lille: NodeKey, peers: Peers) -> None:
    header, payload, signature = _token(lille).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["sub"] = "dr.admin"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(BadSignatureError):
        verify_request(f"{header}.{forged}.{signature}", "GET", PATH, "caen", peers)


def test_alg_none_and_hmac_are_refused(lille: NodeKey, peers: Peers) -> None:
    claims = jwt.decode(_token(lille), options={"verify_signature": False})
    unsigned = jwt.encode(claims, "", algorithm="none", headers={"typ": TOKEN_TYPE})
    with pytest.raises(MalformedTokenError):
        verify_request(unsigned, "GET", PATH, "caen", peers)
    hmac = jwt.encode(claims, b"k" * 32, algorithm="HS256", headers={"typ": TOKEN_TYPE})
    with pytest.raises(MalformedTokenError):
        verify_request(hmac, "GET", PATH, "caen", peers)


def test_garbage(peers: Peers) -> None:
    for junk in ("", "abc", "a.b.c", "Bearer x"):
        with pytest.raises(MalformedTokenError):
            verify_request(junk, "GET", PATH, "caen", peers)


def test_lifetime_longer_than_allowed(lille: NodeKey, peers: Peers) -> None:
    with pytest.raises(ValueError, match="ttl_s"):
        _token(lille, ttl_s=3600)
    now = int(time.time())
    claims = {"iss": "lille", "aud": "caen", "sub": "x", "iat": now, "exp": now + 3600}
    claims |= {"jti": "1", "htm": "GET", "htu": PATH}
    long_lived = jwt.encode(
        claims, lille.private_key, algorithm="EdDSA", headers={"typ": TOKEN_TYPE}
    )
    with pytest.raises(TokenLifetimeError):
        verify_request(long_lived, "GET", PATH, "caen", peers)


def test_other_method_path_or_body(lille: NodeKey, peers: Peers) -> None:
    token = _token(lille)
    with pytest.raises(RequestMismatchError):
        verify_request(token, "POST", PATH, "caen", peers)
    with pytest.raises(RequestMismatchError):
        verify_request(token, "GET", PATH.replace("1_2", "9_9"), "caen", peers)
    with pytest.raises(RequestMismatchError):
        verify_request(token, "GET", PATH, "caen", peers, body=b"{}")
    posted = sign_request(lille, "POST", "/x", "caen", "s", body=b'{"a": 1}')
    verify_request(posted, "POST", "/x", "caen", peers, body=b'{"a": 1}')
    with pytest.raises(RequestMismatchError):
        verify_request(posted, "POST", "/x", "caen", peers, body=b'{"a": 2}')


def test_replay(lille: NodeKey, peers: Peers) -> None:
    cache = ReplayCache()
    token = _token(lille)
    verify_request(token, "GET", PATH, "caen", peers, replay_cache=cache)
    with pytest.raises(ReplayedTokenError):
        verify_request(token, "GET", PATH, "caen", peers, replay_cache=cache)
    verify_request(_token(lille), "GET", PATH, "caen", peers, replay_cache=cache)
    assert len(cache) == 2


def test_replay_cache_forgets_only_expired_tokens_and_is_bounded() -> None:
    cache = ReplayCache(max_entries=2)
    now = 1_000_000.0
    cache.check_and_add("lille", "a", exp=int(now) + 30, now=now)
    cache.check_and_add("lille", "b", exp=int(now) + 30, now=now)
    with pytest.raises(RequestAuthError, match="too many"):
        cache.check_and_add("lille", "c", exp=int(now) + 30, now=now + 1)
    with pytest.raises(ReplayedTokenError):  # still remembered while it could be valid
        cache.check_and_add("lille", "a", exp=int(now) + 30, now=now + 30)
    cache.check_and_add("lille", "c", exp=int(now) + 99, now=now + 40)  # a, b expired: swept
    assert len(cache) == 1


def test_reserved_claims_cannot_be_overridden(lille: NodeKey) -> None:
    with pytest.raises(ValueError, match="aud"):
        _token(lille, claims={"aud": "everyone"})


def test_keys_load_from_pem_jwk_file_and_env(lille: NodeKey, tmp_path: Path) -> None:
    assert load_public_key(lille.public_jwk()).public_bytes_raw() == (
        lille.public_key.public_bytes_raw()
    )
    assert load_public_key(json.dumps(lille.public_jwk())) == load_public_key(lille.public_pem())
    key_file = tmp_path / "node.pem"
    key_file.write_bytes(lille.private_pem())
    loaded = NodeKey.from_env({"SHARE_NODE_NAME": "lille", "SHARE_NODE_KEY_FILE": str(key_file)})
    assert loaded.public_pem() == lille.public_pem()
    assert (
        NodeKey.from_env(
            {"SHARE_NODE_NAME": "lille", "SHARE_NODE_KEY": lille.private_pem().decode()}
        ).public_jwk()["kid"]
        == (lille.public_jwk()["kid"])
    )
    with pytest.raises(NodeKeyError, match="SHARE_NODE_NAME"):
        NodeKey.from_env({})
    with pytest.raises(NodeKeyError, match="cannot read"):
        NodeKey.from_file("lille", tmp_path / "missing.pem")
    with pytest.raises(NodeKeyError, match="not a PEM"):
        NodeKey.from_pem("lille", b"-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----")
    with pytest.raises(ValueError, match="Ed25519"):
        load_public_key({"kty": "RSA", "n": "x", "e": "AQAB"})

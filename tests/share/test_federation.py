"""Federation: peer configuration, the owner-side share check, and two real nodes on loopback."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from share import audit
from share.audit import ViewAggregator
from share.db import open_database
from share.deidentify import SharedRegion, derive_shared_pyramid
from share.federation import (
    MAX_ACCESS_LAG_S,
    FederationAccess,
    FederationAuditTrail,
    FederationConfig,
    JsonShareFile,
    Peer,
    Permission,
    Recipient,
    RecipientKind,
    Share,
    authorize_share,
    new_pseudonym,
    new_share_id,
)
from share.federation_errors import (
    PeerConfigError,
    PeerNotFoundError,
    PeerRejectedError,
    PeerUnavailableError,
    ShareExpiredError,
    ShareNotFoundError,
    SharePermissionError,
    ShareRecipientError,
    ShareRevokedError,
    SourcePyramidError,
    TokenExpiredError,
)
from share.federation_router import (
    RecipientState,
    federation_error_handler,
    owner_router,
    recipient_router,
    shared_with_me_everywhere,
)
from share.peers import CachingPeerClient, Caller, HttpPeerClient
from share.signing import NodeKey, load_public_key, sign_request
from tests.share.conftest_federation import (
    CANARIES,
    CANARY_FILE_NAME,
    RECIPIENT_CACHE_TTL_S,
    CanarySlide,
    Node,
    canary_pyramid,
    canary_slide,
    free_port,
    nodes,
)

__all__ = ["canary_pyramid", "canary_slide", "nodes"]  # fixtures used by name

NOW = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)
KEY = NodeKey.generate("lille")


def _share(**changes: object) -> Share:
    values: dict[str, object] = {
        "share_id": "s1",
        "owner_centre": "caen",
        "slide_id": "caen-slide-0001",
        "recipient": Recipient(RecipientKind.USER, "lille", "dr.lille"),
        "permission": Permission.VIEW,
        "expires_at": NOW + timedelta(days=7),
        "pseudonym": "SHR-0a1b2c",
        "note": "second opinion, please",
    }
    values.update(changes)
    return Share(**values)  # type: ignore[arg-type]


CLAIMS = {"iss": "lille", "sub": "dr.lille", "groups": ["uropath"]}


# ------------------------------------------------------------------ configuration


def test_config_from_toml_json_and_env(tmp_path: Path) -> None:
    pem = KEY.public_pem()
    toml = tmp_path / "federation.toml"
    toml.write_text(
        f'node = "caen"\n[[peers]]\nname = "lille"\nurl = "https://iain.lille.example/"\n'
        f"public_key = '''{pem}'''\n"
    )
    config = FederationConfig.from_file(toml)
    assert config.node == "caen"
    assert config.peer("lille").url == "https://iain.lille.example"
    assert config.public_keys()["lille"] == KEY.public_key
    data = {
        "node": "caen",
        "peers": [{"name": "lille", "url": "http://127.0.0.1:1", "public_key": KEY.public_jwk()}],
    }
    assert FederationConfig.from_env({"SHARE_FEDERATION_JSON": json.dumps(data)}).peers.keys() == {
        "lille"
    }
    (tmp_path / "f.json").write_text(json.dumps(data))
    assert (
        FederationConfig.from_env({"SHARE_FEDERATION_FILE": str(tmp_path / "f.json")}).node
        == "caen"
    )


@pytest.mark.parametrize(
    ("peer", "message"),
    [
        ({"name": "lille", "url": "http://10.0.0.5", "public_key": "PEM"}, "loopback only"),
        ({"name": "lille", "url": "ftp://x", "public_key": "PEM"}, "http"),
        ({"name": "lille", "url": "https://x"}, "public_key"),
        ({"name": "lille", "url": "https://x", "public_key": "-----BEGIN nope"}, "Ed25519"),
        ({"name": "Lille!", "url": "https://x", "public_key": "PEM"}, "name"),
        ({"name": "caen", "url": "https://x", "public_key": "PEM"}, "used twice"),
        ({"name": "lille", "url": "https://u:p@x", "public_key": "PEM"}, "credentials"),
    ],
)
def test_bad_peer_config_names_the_problem(peer: dict[str, str], message: str) -> None:
    if peer.get("public_key") == "PEM":
        peer = peer | {"public_key": KEY.public_pem()}
    with pytest.raises(PeerConfigError, match=message):
        FederationConfig.from_mapping({"node": "caen", "peers": [peer]})


def test_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(PeerConfigError, match="cannot read"):
        FederationConfig.from_file(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("node = ")
    with pytest.raises(PeerConfigError, match="not valid"):
        FederationConfig.from_file(tmp_path / "bad.toml")
    with pytest.raises(PeerConfigError, match="SHARE_FEDERATION"):
        FederationConfig.from_env({})
    config = FederationConfig.from_mapping({"node": "caen"})
    with pytest.raises(PeerConfigError, match="no peer named"):
        config.peer("rouen")


# ------------------------------------------------------------------ the owner-side decision


def test_authorize_share_grants_the_named_recipient() -> None:
    assert authorize_share(_share(), CLAIMS, NOW).share_id == "s1"
    group = _share(recipient=Recipient(RecipientKind.GROUP, "lille", "uropath"))
    assert authorize_share(group, CLAIMS | {"sub": "dr.other"}, NOW) is group
    annotate = _share(permission=Permission.ANNOTATE)
    assert authorize_share(annotate, CLAIMS, NOW, action=Permission.ANNOTATE) is annotate


def test_authorize_share_refusals() -> None:
    with pytest.raises(ShareNotFoundError):
        authorize_share(None, CLAIMS, NOW)
    with pytest.raises(ShareRevokedError):
        authorize_share(_share().revoke(NOW - timedelta(seconds=1)), CLAIMS, NOW)
    with pytest.raises(ShareExpiredError):
        authorize_share(_share(expires_at=NOW), CLAIMS, NOW)
    with pytest.raises(ShareRecipientError):
        authorize_share(_share(), CLAIMS | {"iss": "rouen"}, NOW)  # same user name, other centre
    with pytest.raises(ShareRecipientError):
        authorize_share(_share(), CLAIMS | {"sub": "dr.other"}, NOW)
    group = _share(recipient=Recipient(RecipientKind.GROUP, "lille", "uropath"))
    with pytest.raises(ShareRecipientError):
        authorize_share(group, CLAIMS | {"groups": ["derm"]}, NOW)
    with pytest.raises(SharePermissionError):
        authorize_share(_share(), CLAIMS, NOW, action=Permission.ANNOTATE)


def test_access_ends_at_expiry_not_a_second_later() -> None:
    share = _share(expires_at=NOW + timedelta(seconds=30))
    authorize_share(share, CLAIMS, NOW + timedelta(seconds=29, microseconds=999_999))
    with pytest.raises(ShareExpiredError):
        authorize_share(share, CLAIMS, NOW + timedelta(seconds=30))


def test_share_file_round_trip_and_reload(tmp_path: Path) -> None:
    store = JsonShareFile(tmp_path / "shares.json")
    assert store.get("s1") is None
    share = _share(
        share_id=new_share_id(),
        pseudonym=new_pseudonym(),
        created_at=NOW,
        region=SharedRegion(10, 20, 300, 400),
    )
    store.save([share])
    assert store.get(share.share_id) == share
    store.save([share.revoke(NOW)])
    assert store.get(share.share_id).revoked_at == NOW  # type: ignore[union-attr]
    assert new_pseudonym() != new_pseudonym()


def test_peer_accesses_land_in_the_hash_chained_audit_trail(tmp_path: Path) -> None:
    """Granted tiles aggregate into regions seen; refusals are one record each; chain verifies."""
    db = open_database(f"sqlite:///{tmp_path / 'caen.db'}")
    try:
        aggregator = ViewAggregator(db, flush_s=3600)
        trail = FederationAuditTrail(db, aggregator)
        base: dict[str, Any] = {"at": NOW, "peer": "lille", "subject": "dr.lille", "share_id": "s1"}
        owner: dict[str, Any] = {"slide_id": "caen-slide-0001", "owner_centre": "caen"}
        for col, row in ((3, 4), (5, 2)):
            trail(
                FederationAccess(
                    **base, action="tile", allowed=True, reason="", **owner, tile=(0, col, row)
                )
            )
        trail(
            FederationAccess(
                **base,
                action="tile",
                allowed=False,
                reason="share_revoked",
                **owner,
                tile=(0, 3, 4),
            )
        )
        trail(
            FederationAccess(
                **base | {"share_id": "nope"},
                action="info",
                allowed=False,
                reason="share_not_found",
                owner_centre="caen",
            )
        )
        assert aggregator.flush() == 1
        rows = audit.records(db, centre_id="caen")
        assert [(r["action"], r["outcome"], r["actor"]) for r in rows] == [
            ("federation.tile", "denied", "dr.lille@lille"),
            ("federation.info", "denied", "dr.lille@lille"),
            ("slide.view", "ok", "dr.lille@lille"),
        ]
        assert rows[0]["detail"] == {
            "peer": "lille",
            "share": "s1",
            "tile": [0, 3, 4],
            "reason": "share_revoked",
        }
        assert rows[2]["slide_id"] == "caen-slide-0001"
        assert rows[2]["detail"]["tiles"] == 2 and rows[2]["detail"]["regions"] == {
            "0": [3, 2, 5, 4]
        }
        assert audit.verify(db).records == 3
    finally:
        db.engine.dispose()


# ------------------------------------------------------------------ two real nodes


def _publish(owner: Node, pyramid: Path, share: Share) -> None:
    """Derive the share's pyramid at the owner and make the share the only one it holds."""
    target = owner.pyramids / share.share_id
    if not target.exists():
        derive_shared_pyramid(pyramid, target, pseudonym=share.pseudonym)
    owner.shares.save([share])


def _live_share(share_id: str, **changes: object) -> Share:
    now = datetime.now(UTC)
    values: dict[str, object] = {"expires_at": now + timedelta(hours=1)} | changes
    return _share(share_id=share_id, pseudonym=new_pseudonym(), created_at=now, **values)


def test_recipient_reads_a_tile_then_revocation_ends_it(
    nodes: dict[str, Node], canary_pyramid: Path, canary_slide: CanarySlide
) -> None:
    caen, lille = nodes["caen"], nodes["lille"]
    share = _live_share("share-rev")
    _publish(caen, canary_pyramid, share)
    url = f"{lille.url}/shared/caen/{share.share_id}"
    with httpx.Client(timeout=10) as browser:
        listing = browser.get(f"{lille.url}/shared/caen").json()
        assert [item["pseudonym"] for item in listing] == [share.pseudonym]
        info = browser.get(url).json()
        assert (info["width"], info["height"], info["pseudonym"]) == (2220, 2967, share.pseudonym)
        assert browser.get(f"{url}/tiles/0/99_0.jpeg").status_code == 404
        tile = browser.get(f"{url}/tiles/0/1_2.jpeg")
        assert tile.status_code == 200 and tile.headers["content-type"] == "image/jpeg"
        stored = (caen.pyramids / share.share_id / "0/c/0/2/1").read_bytes()
        assert tile.content == stored  # the derived chunk, byte for byte, through two nodes
        for response in (listing, info):
            _assert_no_canary(json.dumps(response).encode(), canary_slide)

        caen.shares.save([share.revoke(datetime.now(UTC))])
        revoked_at = time.monotonic()
        while browser.get(f"{url}/tiles/0/1_2.jpeg").status_code != 404:
            assert time.monotonic() - revoked_at < 60, "tile still served 60 s after revocation"
            time.sleep(0.2)
        lag = time.monotonic() - revoked_at
        assert lag < MAX_ACCESS_LAG_S  # the promise
        assert lag < RECIPIENT_CACHE_TTL_S + 5  # in practice: the recipient's cache TTL
        assert browser.get(url).status_code == 404
        assert browser.get(f"{lille.url}/shared/caen").json() == []
    records = [json.loads(line) for line in caen.audit.read_text().splitlines()]
    mine = [r for r in records if r["share_id"] == share.share_id]
    granted = {(r["peer"], r["subject"], r["what"]) for r in mine if r["allowed"]}
    assert ("lille", "dr.lille", "tile 0/1_2") in granted
    assert mine[-1]["allowed"] is False and mine[-1]["reason"] == "share_revoked"
    print(f"revocation -> 404 at the recipient after {lag * 1000:.0f} ms")


def test_expiry_ends_access_through_the_recipient(
    nodes: dict[str, Node], canary_pyramid: Path
) -> None:
    caen, lille = nodes["caen"], nodes["lille"]
    share = _live_share("share-exp")
    _publish(caen, canary_pyramid, share)  # derive first: the clock starts below
    expiring = replace(share, expires_at=datetime.now(UTC) + timedelta(seconds=2))
    caen.shares.save([expiring])
    tile = f"{lille.url}/shared/caen/{expiring.share_id}/tiles/1/0_0.jpeg"
    assert httpx.get(tile, timeout=10).status_code == 200
    time.sleep(max(0.0, (expiring.expires_at - datetime.now(UTC)).total_seconds()))
    expired_at = time.monotonic()
    while httpx.get(tile, timeout=10).status_code != 404:
        assert time.monotonic() - expired_at < MAX_ACCESS_LAG_S, "tile served 60 s after expiry"
        time.sleep(0.2)
    assert time.monotonic() - expired_at < RECIPIENT_CACHE_TTL_S + 5  # ~ the cache TTL, not 60 s


def test_owner_refuses_other_users_unsigned_and_unknown_nodes(
    nodes: dict[str, Node], canary_pyramid: Path
) -> None:
    caen, lille = nodes["caen"], nodes["lille"]
    share = _live_share("share-acl")
    _publish(caen, canary_pyramid, share)
    peer = Peer("caen", caen.url, load_public_key(caen.key.public_pem()))
    with HttpPeerClient(lille.key, peer) as client:
        assert client.slide_info(share.share_id, Caller("dr.lille")).pseudonym == share.pseudonym
        with pytest.raises(PeerNotFoundError):
            client.read_tile(share.share_id, 0, 0, 0, Caller("dr.other"))
        with pytest.raises(PeerNotFoundError):
            client.read_tile("no-such-share", 0, 0, 0, Caller("dr.lille"))
    impostor = HttpPeerClient(NodeKey.generate("lille"), peer)
    with impostor, pytest.raises(PeerRejectedError, match="bad_signature"):
        impostor.read_tile(share.share_id, 0, 0, 0, Caller("dr.lille"))
    path = f"/federation/shares/{share.share_id}/tiles/0/0_0.jpeg"
    unsigned = httpx.get(f"{caen.url}{path}", timeout=10)
    assert unsigned.status_code == 401 and unsigned.json()["error"] == "malformed_token"
    token = sign_request(lille.key, "GET", path, "caen", "dr.lille")
    first = httpx.get(f"{caen.url}{path}", headers={"Authorization": f"Bearer {token}"})
    replay = httpx.get(f"{caen.url}{path}", headers={"Authorization": f"Bearer {token}"})
    assert (first.status_code, replay.status_code) == (200, 401)
    assert replay.json()["error"] == "token_replayed"


def test_a_same_named_user_at_another_centre_gets_nothing(
    nodes: dict[str, Node], canary_pyramid: Path
) -> None:
    """Rouen's ``dr.lille`` is not Lille's ``dr.lille``: the owner checks the signing centre."""
    caen, rouen, lille = nodes["caen"], nodes["rouen"], nodes["lille"]
    share = _live_share("share-3")
    _publish(caen, canary_pyramid, share)
    tile = f"/shared/caen/{share.share_id}/tiles/0/0_0.jpeg"
    assert httpx.get(f"{lille.url}{tile}", timeout=10).status_code == 200
    assert httpx.get(f"{rouen.url}{tile}", timeout=10).status_code == 404
    assert httpx.get(f"{rouen.url}/shared/caen", timeout=10).json() == []
    assert httpx.get(f"{lille.url}/shared/rouen", timeout=10).json() == []  # Rouen shares nothing
    assert httpx.get(f"{lille.url}/shared/brest", timeout=10).status_code == 404  # not a peer
    everywhere = httpx.get(f"{lille.url}/shared", timeout=10).json()
    assert [(s["peer"], s["share_id"]) for s in everywhere["slides"]] == [("caen", "share-3")]
    assert everywhere["unavailable"] == []


def test_revocation_notice_purges_the_recipient_cache_at_once(
    nodes: dict[str, Node], canary_pyramid: Path
) -> None:
    caen, rouen, lille = nodes["caen"], nodes["rouen"], nodes["lille"]
    share = _live_share("share-push")
    _publish(caen, canary_pyramid, share)
    tile = f"{lille.url}/shared/caen/{share.share_id}/tiles/0/2_2.jpeg"
    assert httpx.get(tile, timeout=10).status_code == 200  # now in Lille's cache
    to_lille = Peer("lille", lille.url, load_public_key(lille.key.public_pem()))
    with HttpPeerClient(rouen.key, to_lille) as rouen_client:
        assert rouen_client.notify_revoked([share.share_id]) == 0  # not Rouen's share
    caen.shares.save([share.revoke(datetime.now(UTC))])
    with HttpPeerClient(caen.key, to_lille) as caen_client:
        assert caen_client.notify_revoked([share.share_id]) == 1  # the cached tile
    assert httpx.get(tile, timeout=10).status_code == 404  # at once, not after the cache TTL
    path = "/federation/revocations"
    token = sign_request(caen.key, "POST", path, "lille", "node", body=b'{"share_ids": []}')
    forged = httpx.post(
        f"{lille.url}{path}",
        content=b'{"share_ids": ["other"]}',
        headers={"Authorization": f"Bearer {token}"},
    )
    assert forged.status_code == 401 and forged.json()["error"] == "request_mismatch"
    token = sign_request(caen.key, "POST", path, "lille", "node", body=b"[1]")
    bad = httpx.post(
        f"{lille.url}{path}", content=b"[1]", headers={"Authorization": f"Bearer {token}"}
    )
    assert bad.status_code == 422 and bad.json()["error"] == "bad_revocation"


def test_recipient_cache_is_bounded_per_caller_and_purged(
    nodes: dict[str, Node], canary_pyramid: Path
) -> None:
    caen, lille = nodes["caen"], nodes["lille"]
    share = _live_share("share-cache")
    _publish(caen, canary_pyramid, share)
    peer = Peer("caen", caen.url, load_public_key(caen.key.public_pem()))
    clock = [1000.0]
    cache = CachingPeerClient(
        HttpPeerClient(lille.key, peer), max_bytes=40_000, ttl_s=30, clock=lambda: clock[0]
    )
    me, other = Caller("dr.lille"), Caller("dr.other")
    try:
        first = cache.read_tile(share.share_id, 0, 1, 1, me)
        audited = len(caen.audit.read_text().splitlines())
        assert cache.read_tile(share.share_id, 0, 1, 1, me) == first
        assert (cache.hits, cache.misses) == (1, 1)
        assert len(caen.audit.read_text().splitlines()) == audited  # served from memory
        with pytest.raises(PeerNotFoundError):  # another user never gets my cached tile
            cache.read_tile(share.share_id, 0, 1, 1, other)
        for col in range(8):
            cache.read_tile(share.share_id, 0, col, 0, me)
        assert 0 < cache.cached_bytes <= 40_000
        caen.shares.save([share.revoke(datetime.now(UTC))])
        cache.read_tile(share.share_id, 0, 7, 0, me)  # within ttl: the bounded lag
        clock[0] += 30
        with pytest.raises(PeerNotFoundError):
            cache.read_tile(share.share_id, 0, 7, 0, me)
        assert cache.cached_bytes == 0  # the owner's 404 purged the whole share
    finally:
        cache.close()
    with pytest.raises(ValueError, match="60"):
        CachingPeerClient(cache, ttl_s=120)


def test_no_endpoint_returns_a_canary(
    nodes: dict[str, Node], canary_pyramid: Path, canary_slide: CanarySlide
) -> None:
    """Every federation route of both nodes (enumerated, so a new route must be added here)."""
    caen, lille = nodes["caen"], nodes["lille"]
    share = _live_share("share-canary")
    _publish(caen, canary_pyramid, share)
    sid = share.share_id
    owner = {
        "/federation/shares": "/federation/shares",
        "/federation/shares/{share_id}": f"/federation/shares/{sid}",
        "/federation/shares/{share_id}/tiles/{level}/{col}_{row}.jpeg": (
            f"/federation/shares/{sid}/tiles/0/0_0.jpeg"
        ),
    }
    recipient = {
        "/shared": "/shared",
        "/shared/{peer}": "/shared/caen",
        "/shared/{peer}/{share_id}": f"/shared/caen/{sid}",
        "/shared/{peer}/{share_id}/tiles/{level}/{col}_{row}.jpeg": (
            f"/shared/caen/{sid}/tiles/4/0_0.jpeg"
        ),
    }
    node_to_node = {"/federation/revocations"}  # POST, no slide data: tested above
    assert {r.path for r in owner_router.routes} == set(owner) | node_to_node  # type: ignore[attr-defined]
    assert {route.path for route in recipient_router.routes} == set(recipient)  # type: ignore[attr-defined]
    responses = []
    for path in owner.values():
        token = sign_request(lille.key, "GET", path, "caen", "dr.lille")
        responses.append(
            httpx.get(f"{caen.url}{path}", headers={"Authorization": f"Bearer {token}"})
        )
        responses.append(httpx.get(f"{caen.url}{path}"))  # unsigned: 401
    responses += [httpx.get(f"{lille.url}{path}", timeout=10) for path in recipient.values()]
    assert [r.status_code for r in responses] == [200, 401, 200, 401, 200, 401, 200, 200, 200, 200]
    caen.shares.save([share.revoke(datetime.now(UTC))])
    responses += [httpx.get(f"{lille.url}{path}", timeout=10) for path in recipient.values()]
    for response in responses:
        head = "\n".join(f"{k}: {v}" for k, v in response.headers.items()).encode()
        _assert_no_canary(head + response.content, canary_slide)


def test_unreachable_peer_is_a_clear_error() -> None:
    peer = Peer("rouen", f"http://127.0.0.1:{free_port()}", KEY.public_key)
    with HttpPeerClient(KEY, peer, timeout_s=2) as client, pytest.raises(PeerUnavailableError):
        client.list_shared(Caller("dr.lille"))


def test_shared_with_me_names_a_peer_that_is_down() -> None:
    down = Peer("rouen", f"http://127.0.0.1:{free_port()}", KEY.public_key)
    with HttpPeerClient(KEY, down, timeout_s=2) as client:
        answer = shared_with_me_everywhere(RecipientState({"rouen": client}), Caller("dr.lille"))
    assert answer == {"slides": [], "unavailable": [{"peer": "rouen", "error": "peer_unavailable"}]}


def test_error_mapping_hides_which_refusal_and_internals() -> None:
    def answer(exc: Exception) -> tuple[int, bytes]:
        response = federation_error_handler(None, exc)  # type: ignore[arg-type]
        return response.status_code, bytes(response.body)

    assert answer(ShareRevokedError("share s1 was revoked")) == answer(ShareNotFoundError("x"))
    assert answer(ShareRevokedError("s1"))[0] == 404
    status, body = answer(SourcePyramidError("not an IAIN pyramid: /data/CANARY-PATIENT-4711"))
    assert status == 500 and b"CANARY" not in body and b"bad_source_pyramid" in body
    status, body = answer(TokenExpiredError("token expired 70 s ago"))
    assert status == 401 and json.loads(body)["error"] == "token_expired"


def _assert_no_canary(data: bytes, slide: CanarySlide) -> None:
    for text in (*CANARIES, CANARY_FILE_NAME, slide.sha256, "caen-slide-0001"):
        assert text.encode() not in data, f"{text} leaked"

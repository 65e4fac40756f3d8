"""Teaching collections across nodes: the owner lists them to peers, a reader's node asks.

Owner side (signed node token, like every ``/federation`` route)::

    GET /federation/collections          collections shown to the calling node's centre

Reader side (the reader's session)::

    GET /api/shared-collections                  every peer's collections for me (in parallel)
    GET /api/shared-collections/{peer}/{id}      one of them

Only the de-identified form travels: pseudonyms, the allow-listed slide facts, the curator's
regions and captions, and per item the share id whose pixels the reader's node already proxies
(``/shared/{peer}/{share_id}/tiles/...``). The owner audits each collection it lists to a peer
(``collection.read`` by ``user@node``); the tiles are audited by the share machinery.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, FastAPI, Path, Request

from share.accounts import Accounts
from share.authz import Principal
from share.collections import Collections
from share.federation import FederationConfig, Peer
from share.federation_errors import (
    PeerError,
    PeerNotFoundError,
    PeerProtocolError,
    PeerRejectedError,
    PeerUnavailableError,
)
from share.federation_router import ClaimsDep
from share.peers import MAX_JSON_BYTES, Caller
from share.shares import groups_of
from share.signing import NodeKey, sign_request
from share.web import principal_of

__all__ = ["PeerCollections", "install_collections_federation", "owner_router", "reader_router"]

logger = logging.getLogger(__name__)

owner_router = APIRouter(prefix="/federation", tags=["federation"])
reader_router = APIRouter(prefix="/api/shared-collections", tags=["collections"])

_ROUTE = "/federation/collections"
_HEAD_KEYS = ("id", "title", "description", "owner_centre", "created_at", "expires_at")
_INFO_KEYS = (
    "pseudonym",
    "width",
    "height",
    "tile_width",
    "tile_height",
    "level_count",
    "mpp_x",
    "mpp_y",
    "objective_power",
    "region",
)


@owner_router.get("/collections")
def collections_for_peer(request: Request, claims: ClaimsDep) -> list[dict[str, Any]]:
    collections: Collections = request.app.state.collections
    groups = claims.get("groups")
    return collections.for_peer(
        str(claims["iss"]), str(claims["sub"]), groups if isinstance(groups, list) else []
    )


class PeerCollections:
    """Asks peers for the collections shown to this node's users (signed, size-bounded)."""

    def __init__(self, key: NodeKey, peers: Mapping[str, Peer], timeout_s: float = 5.0) -> None:
        self._key = key
        self.peers = dict(peers)
        self._timeout = httpx.Timeout(timeout_s, connect=2.0)

    def fetch(self, peer_name: str, caller: Caller) -> list[dict[str, Any]]:
        peer = self.peers.get(peer_name)
        if peer is None:
            raise PeerNotFoundError("no such peer")
        target = peer.url.split("://", 1)[1].partition("/")[2]
        path = f"/{target}{_ROUTE}" if target else _ROUTE
        claims = {"groups": list(caller.groups)} if caller.groups else None
        token = sign_request(self._key, "GET", path, peer.name, caller.user, claims)
        try:
            with (
                httpx.Client(timeout=self._timeout, trust_env=False) as client,
                client.stream(
                    "GET", peer.url + _ROUTE, headers={"Authorization": f"Bearer {token}"}
                ) as response,
            ):
                if response.status_code in (401, 403):
                    raise PeerRejectedError(f"{peer.name}: refused our request")
                if response.status_code != 200:
                    raise PeerUnavailableError(f"{peer.name}: answered {response.status_code}")
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > MAX_JSON_BYTES:
                        raise PeerProtocolError(f"{peer.name}: answer too large")
        except httpx.HTTPError as exc:
            raise PeerUnavailableError(f"{peer.name}: unreachable ({exc})") from exc
        try:
            return [_clean(peer.name, c) for c in json.loads(body)]
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise PeerProtocolError(f"{peer.name}: bad collection list ({exc})") from exc


def _clean(peer: str, data: dict[str, Any]) -> dict[str, Any]:
    """Keep only the keys a collection may carry (a peer's extra fields are dropped)."""
    out: dict[str, Any] = {key: data[key] for key in _HEAD_KEYS}
    out["id"] = int(out["id"])
    out["peer"] = peer
    items = []
    for item in data["items"]:
        share_id = str(item["share_id"])
        info = item.get("info")
        regions = [
            {
                "x": int(r["x"]),
                "y": int(r["y"]),
                "w": int(r["w"]),
                "h": int(r["h"]),
                "caption": str(r.get("caption", "")),
                **({"um": {k: float(v) for k, v in r["um"].items()}} if r.get("um") else {}),
            }
            for r in item["regions"]
        ]
        items.append(
            {
                "pseudonym": str(item["pseudonym"]),
                "note": str(item.get("note", "")),
                "regions": regions,
                "info": {k: info.get(k) for k in _INFO_KEYS} if isinstance(info, dict) else None,
                "share_id": share_id,
                "shared": f"/shared/{peer}/{share_id}",  # this node's proxy of the owner's tiles
            }
        )
    out["items"] = items
    return out


PrincipalDep = Annotated[Principal, Depends(principal_of)]


def _peer_collections(request: Request) -> PeerCollections:
    peers: PeerCollections = request.app.state.peer_collections
    return peers


PeersDep = Annotated[PeerCollections, Depends(_peer_collections)]


def _caller(who: Principal) -> Caller:
    return Caller(who.username, tuple(groups_of(who)))


@reader_router.get("")
def shared_collections(who: PrincipalDep, peers: PeersDep) -> dict[str, Any]:
    """Collections other centres show to me, every peer asked in parallel; failures named."""
    names = sorted(peers.peers)
    if not names:
        return {"collections": [], "unavailable": []}

    def ask(name: str) -> list[dict[str, Any]] | PeerError:
        try:
            return peers.fetch(name, _caller(who))
        except PeerError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=min(8, len(names))) as pool:
        answers = list(pool.map(ask, names))
    found: list[dict[str, Any]] = []
    unavailable = []
    for name, answer in zip(names, answers, strict=True):
        if isinstance(answer, PeerError):
            unavailable.append({"peer": name, "error": answer.code})
        else:
            found += answer
    return {"collections": found, "unavailable": unavailable}


@reader_router.get("/{peer}/{collection_id}")
def shared_collection(
    peer: str,
    collection_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
    who: PrincipalDep,
    peers: PeersDep,
) -> dict[str, Any]:
    for collection in peers.fetch(peer, _caller(who)):
        if collection["id"] == collection_id:
            return collection
    raise PeerNotFoundError("no such collection, or not shown to you")


def install_collections_federation(app: FastAPI, accounts: Accounts) -> None:
    """Add both sides; call after ``install_federation`` (it provides the owner state)."""
    settings = accounts.settings
    config = FederationConfig.from_file(settings.federation_file)
    key = NodeKey.from_file(config.node, settings.node_key_file)
    app.state.peer_collections = PeerCollections(key, config.peers)
    app.include_router(owner_router)
    app.include_router(reader_router)

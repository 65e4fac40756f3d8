"""HTTP edge of cross-node second opinions and of annotations on a shared slide.

Owner side (the requester's node; every route verifies the signed node token, then decides
at the owner, then audits ``user@centre``)::

    GET    /federation/opinions                          requests asked of the signed user
    GET    /federation/opinions/{id}                     one (allow-listed, share ids only)
    POST   /federation/opinions/{id}/accept|decline|answer
    GET    /federation/shares/{share_id}/annotations?x=&y=&width=&height=   (view permission)
    GET    /federation/shares/{share_id}/annotations/density?...          (what they may see)
    POST   /federation/shares/{share_id}/annotations                       (annotate)
    PUT    /federation/shares/{share_id}/annotations/{annotation_id}       (annotate, own)
    DELETE /federation/shares/{share_id}/annotations/{annotation_id}?version=

Recipient side (the consultant's node, for its logged-in users; ``current_caller``)::

    GET    /api/federation/peers                         the centres this node can ask
    GET    /api/inbox/opinions                           every peer's requests for me
    GET    /api/inbox/opinions/{peer}/{id}
    POST   /api/inbox/opinions/{peer}/{id}/accept|decline|answer
    GET    /shared/{peer}/{share_id}/annotations?x=&y=&width=&height=
    GET    /shared/{peer}/{share_id}/annotations/density?x=&y=&width=&height=&cols=&rows=
    GET    /shared/{peer}/{share_id}/annotations/export.geojson
    POST   /shared/{peer}/{share_id}/annotations
    PUT    /shared/{peer}/{share_id}/annotations/{annotation_id}
    DELETE /shared/{peer}/{share_id}/annotations/{annotation_id}?version=
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from share import annotations as store
from share.annotations_router import AnnotationBody, UpdateBody
from share.errors import InvalidInputError, PayloadTooLargeError
from share.federation import FederationAccess, Share
from share.federation_errors import PeerError, ShareAccessError
from share.federation_opinions import RemoteOpinions, RemoteUser, authorize_remote
from share.federation_router import (
    CallerDep,
    ClientDep,
    OwnerState,
    RecipientState,
    verified_claims,
)
from share.opinions_router import AnswerBody, DeclineBody
from share.peers import PeerClient

__all__ = ["owner_opinions_router", "recipient_opinions_router"]

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 4 * 1024 * 1024  # one annotation or one answer; imports stay local
Verb = Literal["accept", "decline", "answer"]
OpinionId = Annotated[int, Path(ge=1, le=2**63 - 1)]
AnnotationId = Annotated[int, Path(ge=1, le=2**62)]
Coord = Annotated[float, Query(allow_inf_nan=False, ge=-1e8, le=1e8)]
Extent = Annotated[float, Query(allow_inf_nan=False, gt=0, le=1e8)]
Layer = Annotated[str | None, Query(max_length=100)]
Limit = Annotated[int, Query(ge=1, le=50_000)]
Version = Annotated[int, Query(ge=1)]
Cells = Annotated[int, Query(ge=1, le=512)]

owner_opinions_router = APIRouter(prefix="/federation", tags=["federation"])
recipient_opinions_router = APIRouter(tags=["federation"])


# ---------------------------------------------------------------- owner side


def _owner(request: Request) -> OwnerState:
    state: OwnerState = request.app.state.federation_owner
    return state


def _remote(request: Request) -> RemoteOpinions:
    remote: RemoteOpinions = request.app.state.federation_opinions
    return remote


OwnerDep = Annotated[OwnerState, Depends(_owner)]
RemoteDep = Annotated[RemoteOpinions, Depends(_remote)]
ClaimsDep = Annotated[dict[str, Any], Depends(verified_claims)]


async def _signed_body(request: Request) -> tuple[dict[str, Any], dict[str, Any]]:
    """Verified claims of a request with a JSON body (the token is bound to the body)."""
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise PayloadTooLargeError(f"body over {MAX_BODY_BYTES} bytes")
    claims = await run_in_threadpool(verified_claims, request, body or None)
    try:
        data = json.loads(body) if body else {}
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInputError("body is not JSON") from exc
    if not isinstance(data, dict):
        raise InvalidInputError("body must be a JSON object")
    return claims, data


M = TypeVar("M", bound=BaseModel)


SignedDep = Annotated[tuple[dict[str, Any], dict[str, Any]], Depends(_signed_body)]


def parse_body(model: type[M], data: Mapping[str, Any]) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise InvalidInputError(f"{where}: {first.get('msg', 'invalid')}") from None


def _audit(
    state: OwnerState,
    claims: Mapping[str, Any],
    action: str,
    share: Share | None,
    share_id: str,
    refused: str = "",
) -> None:
    if state.audit is None:
        return
    state.audit(
        FederationAccess(
            at=state.clock(),
            peer=str(claims.get("iss")),
            subject=str(claims.get("sub")),
            share_id=share_id,
            action=action,
            allowed=not refused,
            reason=refused,
            slide_id=share.slide_id if share else None,
            owner_centre=share.owner_centre if share else state.config.node,
        )
    )


def _opinion_audit(state: OwnerState, claims: Mapping[str, Any], what: str, oid: int) -> None:
    _audit(state, claims, what, None, f"opinion:{oid}" if oid else "*")


@owner_opinions_router.get("/opinions")
def peer_opinions(state: OwnerDep, remote: RemoteDep, claims: ClaimsDep) -> list[dict[str, Any]]:
    found = remote.list_for(RemoteUser.from_claims(claims))
    _opinion_audit(state, claims, "opinion.list", 0)
    return found


@owner_opinions_router.get("/opinions/{opinion_id}")
def peer_opinion(
    opinion_id: OpinionId, state: OwnerDep, remote: RemoteDep, claims: ClaimsDep
) -> dict[str, Any]:
    found = remote.get(RemoteUser.from_claims(claims), opinion_id)
    _opinion_audit(state, claims, "opinion.read", opinion_id)
    return found


@owner_opinions_router.post("/opinions/{opinion_id}/{verb}")
async def peer_opinion_act(
    signed: SignedDep, opinion_id: OpinionId, verb: Verb, state: OwnerDep, remote: RemoteDep
) -> dict[str, Any]:
    """The consultant's step, relayed by their node; applied by the requester's machine."""
    claims, data = signed
    if verb == "answer":
        data = parse_body(AnswerBody, data).model_dump()
    elif verb == "decline":
        data = parse_body(DeclineBody, data).model_dump()
    user = RemoteUser.from_claims(claims)
    result = await run_in_threadpool(remote.act, user, opinion_id, verb, data)
    _opinion_audit(state, claims, f"opinion.{verb}", opinion_id)
    return result


def _share_for(
    state: OwnerState, claims: Mapping[str, Any], share_id: str, action: str, *, write: bool
) -> Share:
    share = state.shares.get(share_id)
    try:
        authorize_remote(share, claims, state.clock(), write=write)
    except ShareAccessError as exc:
        _audit(state, claims, action, share, share_id, exc.code)
        raise
    assert share is not None
    _audit(state, claims, action, share, share_id)
    return share


@owner_opinions_router.get("/shares/{share_id}/annotations")
def peer_annotations(
    share_id: str,
    state: OwnerDep,
    remote: RemoteDep,
    claims: ClaimsDep,
    x: Coord,
    y: Coord,
    width: Extent,
    height: Extent,
    layer: Layer = None,
    limit: Limit = 5000,
) -> dict[str, Any]:
    share = _share_for(state, claims, share_id, "annotation.read", write=False)
    view = store.Viewport(x, y, width, height)
    return remote.annotations(share, RemoteUser.from_claims(claims), view, layer=layer, limit=limit)


@owner_opinions_router.get("/shares/{share_id}/annotations/density")
def peer_annotation_density(
    share_id: str,
    state: OwnerDep,
    remote: RemoteDep,
    claims: ClaimsDep,
    x: Coord,
    y: Coord,
    width: Extent,
    height: Extent,
    cols: Cells = 64,
    rows: Cells = 64,
    layer: Layer = None,
) -> dict[str, Any]:
    """The low-zoom view, counted over what the caller may see only."""
    share = _share_for(state, claims, share_id, "annotation.read", write=False)
    view = store.Viewport(x, y, width, height)
    user = RemoteUser.from_claims(claims)
    grid = remote.density(share, user, view, cols=cols, rows=rows, layer=layer)
    return {"cols": cols, "rows": rows, "counts": grid}


@owner_opinions_router.post("/shares/{share_id}/annotations", status_code=201)
async def peer_annotation_create(
    signed: SignedDep, share_id: str, state: OwnerDep, remote: RemoteDep
) -> dict[str, Any]:
    claims, data = signed
    body = parse_body(AnnotationBody, data)
    share = _share_for(state, claims, share_id, "annotation.create", write=True)
    user = RemoteUser.from_claims(claims)
    return await run_in_threadpool(remote.create_annotation, share, user, body.to_input())


@owner_opinions_router.put("/shares/{share_id}/annotations/{annotation_id}")
async def peer_annotation_update(
    signed: SignedDep,
    share_id: str,
    annotation_id: AnnotationId,
    state: OwnerDep,
    remote: RemoteDep,
) -> dict[str, Any]:
    claims, data = signed
    body = parse_body(UpdateBody, data)
    share = _share_for(state, claims, share_id, "annotation.update", write=True)
    user = RemoteUser.from_claims(claims)
    return await run_in_threadpool(
        remote.update_annotation, share, user, annotation_id, body.to_input(), body.version
    )


@owner_opinions_router.delete("/shares/{share_id}/annotations/{annotation_id}")
def peer_annotation_delete(
    share_id: str,
    annotation_id: AnnotationId,
    version: Version,
    state: OwnerDep,
    remote: RemoteDep,
    claims: ClaimsDep,
) -> dict[str, int]:
    share = _share_for(state, claims, share_id, "annotation.delete", write=True)
    user = RemoteUser.from_claims(claims)
    return {"version": remote.delete_annotation(share, user, annotation_id, version)}


# ---------------------------------------------------------------- recipient side


@recipient_opinions_router.get("/api/federation/peers")
def peers(request: Request, caller: CallerDep) -> dict[str, Any]:
    """This node's name and the centres it can ask (the request form's consultant centres)."""
    state: RecipientState = request.app.state.federation_recipient
    owner: OwnerState = request.app.state.federation_owner
    return {"node": owner.config.node, "peers": sorted(state.clients)}


@recipient_opinions_router.get("/api/inbox/opinions")
def inbox(request: Request, caller: CallerDep) -> dict[str, Any]:
    """Requests asked of me (or my centre's pool) at every peer, asked in parallel."""
    state: RecipientState = request.app.state.federation_recipient
    clients = list(state.clients.values())
    if not clients:
        return {"opinions": [], "unavailable": []}

    def ask(client: PeerClient) -> Any:
        try:
            return client.call_json("GET", "/opinions", caller)
        except PeerError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=min(8, len(clients))) as pool:
        answers = list(pool.map(ask, clients))
    opinions: list[dict[str, Any]] = []
    unavailable: list[dict[str, str]] = []
    for client, answer in zip(clients, answers, strict=True):
        if isinstance(answer, PeerError) or not isinstance(answer, list):
            code = answer.code if isinstance(answer, PeerError) else "peer_protocol"
            unavailable.append({"peer": client.peer_name, "error": code})
            continue
        opinions += [
            {**item, "peer": client.peer_name} for item in answer if isinstance(item, dict)
        ]
    opinions.sort(key=lambda o: str(o.get("due_at", "")))
    return {"opinions": opinions, "unavailable": unavailable}


@recipient_opinions_router.get("/api/inbox/opinions/{peer}/{opinion_id}")
def inbox_opinion(opinion_id: OpinionId, client: ClientDep, caller: CallerDep) -> Any:
    answer = client.call_json("GET", f"/opinions/{opinion_id}", caller)
    return {**answer, "peer": client.peer_name} if isinstance(answer, dict) else answer


@recipient_opinions_router.post("/api/inbox/opinions/{peer}/{opinion_id}/accept")
def inbox_accept(opinion_id: OpinionId, client: ClientDep, caller: CallerDep) -> Any:
    return client.call_json("POST", f"/opinions/{opinion_id}/accept", caller, {})


@recipient_opinions_router.post("/api/inbox/opinions/{peer}/{opinion_id}/decline")
def inbox_decline(
    opinion_id: OpinionId, body: DeclineBody, client: ClientDep, caller: CallerDep
) -> Any:
    return client.call_json("POST", f"/opinions/{opinion_id}/decline", caller, body.model_dump())


@recipient_opinions_router.post("/api/inbox/opinions/{peer}/{opinion_id}/answer")
def inbox_answer(
    opinion_id: OpinionId, body: AnswerBody, client: ClientDep, caller: CallerDep
) -> Any:
    return client.call_json("POST", f"/opinions/{opinion_id}/answer", caller, body.model_dump())


def _annotations_route(share_id: str, annotation_id: int | None = None) -> str:
    route = f"/shares/{quote(share_id, safe='')}/annotations"
    return route if annotation_id is None else f"{route}/{annotation_id}"


@recipient_opinions_router.get("/shared/{peer}/{share_id}/annotations")
def shared_annotations(
    share_id: str,
    client: ClientDep,
    caller: CallerDep,
    x: Coord,
    y: Coord,
    width: Extent,
    height: Extent,
    layer: Layer = None,
    limit: Limit = 5000,
) -> JSONResponse:
    query: dict[str, Any] = {"x": x, "y": y, "width": width, "height": height, "limit": limit}
    if layer is not None:
        query["layer"] = layer
    route = f"{_annotations_route(share_id)}?{urlencode(query)}"
    answer = client.call_json("GET", route, caller)
    return JSONResponse(answer, media_type="application/geo+json")


@recipient_opinions_router.get("/shared/{peer}/{share_id}/annotations/density")
def shared_annotation_density(
    share_id: str,
    client: ClientDep,
    caller: CallerDep,
    x: Coord,
    y: Coord,
    width: Extent,
    height: Extent,
    cols: Cells = 64,
    rows: Cells = 64,
    layer: Layer = None,
) -> Any:
    query: dict[str, Any] = {"x": x, "y": y, "width": width, "height": height}
    query |= {"cols": cols, "rows": rows} | ({"layer": layer} if layer is not None else {})
    route = f"{_annotations_route(share_id)}/density?{urlencode(query)}"
    return client.call_json("GET", route, caller)


@recipient_opinions_router.get("/shared/{peer}/{share_id}/annotations/export.geojson")
def shared_annotation_export(share_id: str, client: ClientDep, caller: CallerDep) -> JSONResponse:
    """What the caller may see of the shared slide's annotations, as one GeoJSON download."""
    query = {"x": 0, "y": 0, "width": 10**8, "height": 10**8, "limit": 50_000}
    answer = client.call_json("GET", f"{_annotations_route(share_id)}?{urlencode(query)}", caller)
    features = answer.get("features", []) if isinstance(answer, dict) else []
    return JSONResponse(
        {"type": "FeatureCollection", "features": features},
        media_type="application/geo+json",
        headers={"Content-Disposition": 'attachment; filename="shared.geojson"'},
    )


@recipient_opinions_router.post("/shared/{peer}/{share_id}/annotations", status_code=201)
def shared_annotation_create(
    share_id: str, body: AnnotationBody, client: ClientDep, caller: CallerDep
) -> Any:
    payload = body.model_dump(exclude_none=True)
    return client.call_json("POST", _annotations_route(share_id), caller, payload)


@recipient_opinions_router.put("/shared/{peer}/{share_id}/annotations/{annotation_id}")
def shared_annotation_update(
    share_id: str,
    annotation_id: AnnotationId,
    body: UpdateBody,
    client: ClientDep,
    caller: CallerDep,
) -> Any:
    payload = body.model_dump(exclude_none=True)
    return client.call_json("PUT", _annotations_route(share_id, annotation_id), caller, payload)


@recipient_opinions_router.delete("/shared/{peer}/{share_id}/annotations/{annotation_id}")
def shared_annotation_delete(
    share_id: str,
    annotation_id: AnnotationId,
    version: Version,
    client: ClientDep,
    caller: CallerDep,
) -> Any:
    route = f"{_annotations_route(share_id, annotation_id)}?{urlencode({'version': version})}"
    return client.call_json("DELETE", route, caller)

"""Deny by default: the access matrix (role x centre x object) and every route of the app."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable

import httpx
import pytest
from fastapi import FastAPI

from share.authz import (
    Action,
    AnnotationRef,
    AuditScope,
    CollectionRef,
    Principal,
    Role,
    SlideRef,
    SystemRef,
    authorize,
)
from share.web import flatten_routes
from tests.share.conftest import login

CAEN, LILLE = SlideRef("s-caen", "caen"), SlideRef("s-lille", "lille")

# user -> (tile own-centre slide, tile other-centre slide, label own, label other,
#          audit own-centre slide, audit other-centre slide, audit whole centre,
#          access review own-centre slide, review other-centre slide, review slide list,
#          teaching collections list)
HTTP_MATRIX: dict[str | None, tuple[int, ...]] = {
    "caen-patho": (200, 404, 200, 404, 403, 404, 403, 403, 404, 403, 200),
    "lille-patho": (404, 200, 404, 200, 404, 403, 403, 404, 403, 403, 200),
    "caen-admin": (200, 404, 200, 404, 200, 404, 200, 200, 404, 200, 200),
    "lille-admin": (404, 200, 404, 200, 404, 200, 200, 404, 200, 200, 200),
    "caen-ml": (200, 404, 404, 404, 403, 404, 403, 403, 404, 403, 200),
    "caen-operator": (404, 404, 404, 404, 404, 404, 403, 404, 404, 403, 200),
    None: (401, 401, 401, 401, 401, 401, 401, 401, 401, 401, 401),
}
URLS = (
    "/slides/s-caen/tiles/0/0/0",
    "/slides/s-lille/tiles/0/0/0",
    "/slides/s-caen/associated/label",
    "/slides/s-lille/associated/macro",
    "/api/audit?slide_id=s-caen",
    "/api/audit?slide_id=s-lille",
    "/api/audit",
    "/api/review/slides/s-caen",
    "/api/review/slides/s-lille",
    "/api/review/slides",
    "/api/collections",
)


def test_http_access_matrix(new_client: Callable[[], httpx.Client], people: dict[str, str]) -> None:
    got = {}
    for user in HTTP_MATRIX:
        client = new_client()
        if user is not None:
            login(client, user)
        got[user] = tuple(client.get(url).status_code for url in URLS)
    assert got == HTTP_MATRIX


def _p(role: Role, centre: str, user_id: int = 1) -> Principal:
    return Principal(user_id, f"{centre}-{role.value}", centre, role)


# (role, slide centre is own?, annotation owner is self?) -> (read, write)
ANNOTATION_MATRIX: dict[tuple[Role, bool, bool], tuple[bool, bool]] = {
    (Role.PATHOLOGIST, True, True): (True, True),
    (Role.PATHOLOGIST, True, False): (True, False),
    (Role.PATHOLOGIST, False, True): (False, False),
    (Role.PATHOLOGIST, False, False): (False, False),
    (Role.ADMIN, True, True): (True, True),
    (Role.ADMIN, True, False): (True, False),
    (Role.ADMIN, False, True): (False, False),
    (Role.ADMIN, False, False): (False, False),
    (Role.ML, True, True): (True, True),
    (Role.ML, True, False): (True, False),
    (Role.ML, False, True): (False, False),
    (Role.ML, False, False): (False, False),
    (Role.OPERATOR, True, True): (False, False),
    (Role.OPERATOR, True, False): (False, False),
    (Role.OPERATOR, False, True): (False, False),
    (Role.OPERATOR, False, False): (False, False),
}


@pytest.mark.parametrize(("cell", "expected"), list(ANNOTATION_MATRIX.items()))
def test_annotation_matrix(cell: tuple[Role, bool, bool], expected: tuple[bool, bool]) -> None:
    role, own_centre, own_annotation = cell
    me = _p(role, "caen", user_id=7)
    ann = AnnotationRef(CAEN if own_centre else LILLE, 7 if own_annotation else 8)
    got = (
        bool(authorize(me, Action.ANNOTATION_READ, ann)),
        bool(authorize(me, Action.ANNOTATION_WRITE, ann)),
    )
    assert got == expected


def test_function_matrix_every_role_centre_object() -> None:
    """The pure function, every (role, centre, action, object) cell."""
    expected_allowed = {
        (Role.PATHOLOGIST, Action.SLIDE_VIEW, "caen"),
        (Role.PATHOLOGIST, Action.SLIDE_ASSOCIATED, "caen"),
        (Role.ADMIN, Action.SLIDE_VIEW, "caen"),
        (Role.ADMIN, Action.SLIDE_ASSOCIATED, "caen"),
        (Role.ADMIN, Action.AUDIT_READ, "caen"),
        (Role.ML, Action.SLIDE_VIEW, "caen"),
    }
    for role, action, centre in itertools.product(
        Role, (Action.SLIDE_VIEW, Action.SLIDE_ASSOCIATED, Action.AUDIT_READ), ("caen", "lille")
    ):
        obj = AuditScope(centre) if action is Action.AUDIT_READ else SlideRef("s", centre)
        decision = authorize(_p(role, "caen"), action, obj)
        assert bool(decision) == ((role, action, centre) in expected_allowed), (role, action)
        assert decision.reason
    ml = authorize(_p(Role.ML, "caen"), Action.SLIDE_VIEW, CAEN)
    assert (
        ml.pseudonymised
        and not authorize(_p(Role.PATHOLOGIST, "caen"), Action.SLIDE_VIEW, CAEN).pseudonymised
    )
    for role in Role:
        allowed = authorize(_p(role, "caen"), Action.SYSTEM_OPERATE, SystemRef())
        assert bool(allowed) == (role in (Role.ADMIN, Role.OPERATOR))
        for centre in ("caen", "lille"):
            review = authorize(_p(role, "caen"), Action.ACCESS_REVIEW, AuditScope(centre, "s"))
            assert bool(review) == (role is Role.ADMIN and centre == "caen"), (role, centre)


# (role, centre of the caller) -> (create, read, manage) of a Caen collection made by
# "caen-pathologist" and shown to Lille; a Lille read is pseudonymised.
COLLECTION_MATRIX: dict[tuple[Role, str], tuple[bool, bool, bool]] = {
    (Role.PATHOLOGIST, "caen"): (True, True, True),
    (Role.PATHOLOGIST, "lille"): (False, True, False),
    (Role.PATHOLOGIST, "rouen"): (False, False, False),
    (Role.ADMIN, "caen"): (True, True, True),
    (Role.ADMIN, "lille"): (False, True, False),
    (Role.ADMIN, "rouen"): (False, False, False),
    (Role.ML, "caen"): (False, False, False),
    (Role.ML, "lille"): (False, False, False),
    (Role.OPERATOR, "caen"): (False, False, False),
    (Role.OPERATOR, "lille"): (False, False, False),
}


@pytest.mark.parametrize(("cell", "expected"), list(COLLECTION_MATRIX.items()))
def test_collection_matrix(cell: tuple[Role, str], expected: tuple[bool, bool, bool]) -> None:
    role, centre = cell
    me = _p(role, centre)
    made = CollectionRef("caen", "caen-pathologist", frozenset({"lille"}))
    got = (
        bool(authorize(me, Action.COLLECTION_CREATE, CollectionRef("caen"))),
        bool(authorize(me, Action.COLLECTION_READ, made)),
        bool(authorize(me, Action.COLLECTION_MANAGE, made)),
    )
    assert got == expected
    read = authorize(me, Action.COLLECTION_READ, made)
    assert read.pseudonymised == (bool(read) and centre != "caen")
    other = Principal(9, "someone-else", centre, role)
    assert not authorize(other, Action.COLLECTION_MANAGE, made) or role is Role.ADMIN


def test_no_principal_and_mismatched_objects_are_denied() -> None:
    for action in Action:
        for obj in (
            CAEN,
            AnnotationRef(CAEN, 1),
            AuditScope("caen"),
            SystemRef(),
            CollectionRef("caen", "x", frozenset({"lille"})),
        ):
            assert not authorize(None, action, obj)
    admin = _p(Role.ADMIN, "caen")
    assert not authorize(admin, Action.AUDIT_READ, CAEN)  # wrong object type: no rule, deny
    assert not authorize(admin, Action.SLIDE_VIEW, AuditScope("caen"))


def test_ml_sees_pseudonymised_slide_list(
    new_client: Callable[[], httpx.Client], people: dict[str, str]
) -> None:
    patho, ml = new_client(), new_client()
    login(patho, "caen-patho")
    login(ml, "caen-ml")
    names = {s["slide_id"]: s["name"] for s in patho.get("/api/slides").json()}
    assert names == {"s-caen": "PATIENT-CAEN-001", "s-caen-2": "PATIENT-CAEN-002"}
    ml_names = {s["slide_id"]: s["name"] for s in ml.get("/api/slides").json()}
    assert ml_names == {"s-caen": None, "s-caen-2": None}


def _fill(path: str, slide_id: str) -> str:
    path = path.replace("{slide_id}", slide_id)
    return re.sub(r"\{[^}]+\}", "0", path)


def test_every_route_requires_a_session_or_is_public(
    app: FastAPI, new_client: Callable[[], httpx.Client], people: dict[str, str]
) -> None:
    """Enumerate app.routes: without a session each non-public route answers 401 or 303."""
    settings = app.state.share_settings
    anon = new_client()
    checked = 0
    for path, methods in flatten_routes(app.routes):
        for method in sorted(methods - {"HEAD"}):
            url = _fill(path, "s-caen")
            if path in settings.public_paths or path.startswith(settings.public_prefixes):
                continue
            checked += 1
            if method == "WEBSOCKET":
                continue  # closed by the middleware; see test_websocket_needs_session
            response = anon.request(method, url, headers={"accept": "text/html"})
            assert response.status_code in (401, 303), f"{method} {path} reachable"
            if response.status_code == 303:
                assert response.headers["location"].startswith("/login?next=")
    assert checked >= 8


def test_every_slide_route_hides_other_centres_slides(
    app: FastAPI, new_client: Callable[[], httpx.Client], people: dict[str, str]
) -> None:
    """With a session, each route naming a slide answers for a forbidden slide exactly what it
    answers for an unknown one (404, same body up to the id)."""
    client = new_client()
    headers = login(client, "caen-patho")
    slide_routes = [(p, m) for p, m in flatten_routes(app.routes) if "{slide_id}" in p]
    assert len(slide_routes) >= 3
    for path, methods in slide_routes:
        for method in sorted(methods - {"HEAD", "WEBSOCKET"}):
            forbidden = client.request(method, _fill(path, "s-lille"), headers=headers)
            unknown = client.request(method, _fill(path, "s-nowhere"), headers=headers)
            own = client.request(method, _fill(path, "s-caen"), headers=headers)
            assert forbidden.status_code == unknown.status_code == 404, path
            assert forbidden.text.replace("s-lille", "X") == unknown.text.replace("s-nowhere", "X")
            assert own.status_code != 404, path
    # Same for the query-parameter form.
    a = client.get("/api/audit", params={"slide_id": "s-lille"})
    b = client.get("/api/audit", params={"slide_id": "s-nowhere"})
    assert a.status_code == b.status_code == 404
    assert a.text.replace("s-lille", "X") == b.text.replace("s-nowhere", "X")


def test_pages_redirect_api_and_tiles_401(
    new_client: Callable[[], httpx.Client], people: dict[str, str]
) -> None:
    anon = new_client()
    page = anon.get("/viewer/s-caen?x=1", headers={"accept": "text/html"})
    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=/viewer/s-caen%3Fx%3D1"
    tile = anon.get("/slides/s-caen/tiles/0/0/0", headers={"accept": "text/html"})
    assert tile.status_code == 401
    assert anon.get("/api/me").json()["error"] == "not_authenticated"
    assert anon.get("/healthz").status_code == 200
    login_page = anon.get("/login")
    assert login_page.status_code == 200 and "/api/login" in login_page.text

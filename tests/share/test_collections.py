"""Teaching collections through the HTTP API: create, who may list and read, revoke, audit.

A collection is made of ordinary shares to each audience centre's pool, so a member of another
centre reads the slide's tiles by the share grant and loses them when the collection is revoked.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

from share import audit
from share.accounts import Accounts
from tests.share.conftest import login

BODY: dict[str, Any] = {
    "title": "Serrated lesions",
    "description": "Three patterns to tell apart",
    "audience": ["lille"],
    "items": [
        {
            "slide_id": "s-caen",
            "note": "classic case",
            "regions": [{"x": 10, "y": 20, "w": 300, "h": 200, "caption": "saw-tooth crypts"}],
        },
        {"slide_id": "s-caen-2"},
    ],
}


def _create(client: httpx.Client, headers: dict[str, str], **changes: Any) -> httpx.Response:
    return client.post("/api/collections", json=BODY | changes, headers=headers)


def test_create_list_and_read_as_member_and_non_member(
    new_client: Callable[[], httpx.Client], people: dict[str, str], accounts: Accounts
) -> None:
    accounts.add_user("rouen-patho", "rouen", "pathologist", "rouen-patho-password")
    caen, lille, rouen, ml = new_client(), new_client(), new_client(), new_client()
    headers = login(caen, "caen-patho")
    login(lille, "lille-patho")
    login(rouen, "rouen-patho")
    login(ml, "caen-ml")

    created = _create(caen, headers)
    assert created.status_code == 201, created.text
    collection = created.json()
    cid = collection["id"]
    assert [i["slide_id"] for i in collection["items"]] == ["s-caen", "s-caen-2"]
    assert set(collection["items"][0]["shares"]) == {"lille"}
    assert collection["items"][0]["regions"][0]["caption"] == "saw-tooth crypts"

    # Member: the audience centre lists and reads it, de-identified.
    assert [c["id"] for c in lille.get("/api/collections").json()] == [cid]
    read = lille.get(f"/api/collections/{cid}")
    assert read.status_code == 200
    items = read.json()["items"]
    assert [i["pseudonym"] for i in items] == [i["pseudonym"] for i in collection["items"]]
    assert all(i["pseudonym"].startswith("SHR-") for i in items)
    assert "PATIENT-CAEN" not in read.text and "slide_id" not in items[0]
    assert "shares" not in items[0]  # which other centres got it is the owner's business
    assert items[0]["share_id"] == collection["items"][0]["shares"]["lille"]
    assert items[0]["regions"][0] == {
        "x": 10,
        "y": 20,
        "w": 300,
        "h": 200,
        "caption": "saw-tooth crypts",
    }
    # ... and its pixels, through the share to Lille's pool.
    assert lille.get("/slides/s-caen/tiles/0/0/0").status_code == 200

    # Non-members: another centre, and a non-clinician of the owner centre.
    assert rouen.get("/api/collections").json() == []
    assert rouen.get(f"/api/collections/{cid}").status_code == 404
    assert rouen.get("/slides/s-caen/tiles/0/0/0").status_code == 404
    assert ml.get(f"/api/collections/{cid}").status_code == 404
    unknown = rouen.get("/api/collections/999999")
    assert unknown.status_code == 404
    assert unknown.json()["error"] == rouen.get(f"/api/collections/{cid}").json()["error"]


def test_bad_collections_are_4xx(
    new_client: Callable[[], httpx.Client], people: dict[str, str]
) -> None:
    caen, lille = new_client(), new_client()
    headers = login(caen, "caen-patho")
    lille_headers = login(lille, "lille-patho")
    cases = [
        ({"audience": ["caen"]}, 422),  # own centre: it always sees its own
        ({"audience": ["atlantis"]}, 422),
        ({"items": [{"slide_id": "s-lille"}]}, 422),  # not one of my centre's slides
        ({"items": [{"slide_id": "s-caen"}, {"slide_id": "s-caen"}]}, 422),
        ({"items": []}, 422),
        ({"items": [{"slide_id": "s-caen", "regions": [{"x": 0, "y": 0, "w": 0, "h": 1}]}]}, 422),
        ({"expires_at": "2001-01-01T00:00:00Z"}, 422),
        ({"title": ""}, 422),
    ]
    for changes, status in cases:
        response = _create(caen, headers, **changes)
        assert response.status_code == status, (changes, response.text)
        assert response.status_code < 500
    # Lille cannot put Caen's slides into a collection of its own.
    response = _create(lille, lille_headers, audience=["rouen"])
    assert response.status_code == 422
    assert caen.get("/api/collections/0").status_code == 422
    assert caen.get("/api/collections/abc").status_code == 422


def test_revoke_ends_access_and_everything_is_audited(
    new_client: Callable[[], httpx.Client], people: dict[str, str], accounts: Accounts
) -> None:
    caen, other, admin, lille = new_client(), new_client(), new_client(), new_client()
    headers = login(caen, "caen-patho")
    other_headers = login(other, "caen-patho2")
    admin_headers = login(admin, "caen-admin")
    lille_headers = login(lille, "lille-patho")
    cid = _create(caen, headers).json()["id"]
    assert lille.get(f"/api/collections/{cid}").status_code == 200
    assert lille.get("/slides/s-caen-2/tiles/0/1/2").status_code == 200

    assert lille.post(f"/api/collections/{cid}/revoke", headers=lille_headers).status_code == 403
    assert other.post(f"/api/collections/{cid}/revoke", headers=other_headers).status_code == 403
    revoked = admin.post(f"/api/collections/{cid}/revoke", headers=admin_headers)
    assert revoked.status_code == 200 and revoked.json()["revoked"] is True
    assert lille.get(f"/api/collections/{cid}").status_code == 404
    assert lille.get("/api/collections").json() == []
    assert lille.get("/slides/s-caen-2/tiles/0/1/2").status_code == 404
    assert caen.get(f"/api/collections/{cid}").json()["revoked"] is True  # owner keeps the record

    rows = audit.records(accounts.db, centre_id="caen")
    actions = [(r["action"], r["actor"]) for r in rows]
    assert ("collection.create", "caen-patho") in actions
    assert ("collection.read", "lille-patho") in actions
    assert ("collection.revoke", "caen-admin") in actions
    assert sum(1 for a, _ in actions if a == "share.create") == 2  # one per slide and centre
    assert sum(1 for a, _ in actions if a == "share.revoke") == 2
    read = next(r for r in rows if r["action"] == "collection.read")
    assert read["detail"] == {"collection": cid, "reader_centre": "lille"}
    assert audit.verify(accounts.db).records >= len(rows)  # the chain still holds
    assert "PATIENT" not in json.dumps([r for r in rows if r["actor"] == "lille-patho"])

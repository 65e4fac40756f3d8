"""The owner centre's review names the second-opinion request a share served."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx

from tests.share.conftest import login


def test_review_names_the_opinion_behind_an_access(
    new_client: Callable[[], httpx.Client], people: dict[str, str]
) -> None:
    caen, lille, admin = new_client(), new_client(), new_client()
    headers = login(caen, "caen-patho")
    login(lille, "lille-patho")
    login(admin, "caen-admin")
    body = {
        "slide_ids": ["s-caen"],
        "regions": [{"slide_id": "s-caen", "x": 0, "y": 0, "w": 100, "h": 100}],
        "question": "Serrated or not?",
        "due_at": (datetime.now(UTC) + timedelta(days=2)).isoformat(),
        "consultant": {"centre": "lille", "username": "lille-patho"},
    }
    opinion = caen.post("/api/opinions", json=body, headers=headers).json()
    assert caen.post(f"/api/opinions/{opinion['id']}/send", headers=headers).status_code == 200
    assert lille.get("/slides/s-caen/tiles/2/3/4").status_code == 200
    assert lille.get("/slides/s-caen-2/tiles/2/3/4").status_code == 404  # not shared

    review = admin.get("/api/review/slides/s-caen").json()
    (share,) = review["shares"]
    assert share["live"] and share["recipient"] == {
        "kind": "user",
        "centre": "lille",
        "name": "lille-patho",
    }
    views = [a for a in review["accesses"] if a["action"] == "slide.view"]
    assert [(v["user"], v["centre"], v["share_id"], v["opinion_id"]) for v in views] == [
        ("lille-patho", "lille", share["share_id"], opinion["id"])
    ]
    assert views[0]["regions"] == {"2": [3, 4, 3, 4]}
    denied = [a for a in review["accesses"] if a["outcome"] == "denied"]
    assert denied == []  # s-caen-2's refusal is about another slide
    other = admin.get("/api/review/slides/s-caen-2").json()
    assert [(a["user"], a["outcome"]) for a in other["accesses"]] == [("lille-patho", "denied")]
    listing = {s["slide_id"]: s for s in admin.get("/api/review/slides").json()}
    assert listing["s-caen"]["centres"] == ["lille"] and listing["s-caen"]["live_shares"] == 1
    assert listing["s-caen-2"]["centres"] == [] and listing["s-caen-2"]["accesses"] == 1

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


def test_a_local_view_is_tied_to_the_share_that_granted_it() -> None:
    from share.federation import Permission, Recipient, RecipientKind, Share
    from share.review import _granting_share

    t0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)

    def share(share_id: str, kind: RecipientKind, name: str, **times: datetime) -> Share:
        return Share(
            share_id=share_id,
            owner_centre="caen",
            slide_id="s",
            recipient=Recipient(kind, "lille", name),
            permission=Permission.VIEW,
            expires_at=t0 + timedelta(days=9),
            pseudonym="SHR-x",
            created_at=times.get("created_at", t0),
            revoked_at=times.get("revoked_at"),
        )

    pool = share("pool-share", RecipientKind.GROUP, "pool")
    mine = share("user-share", RecipientKind.USER, "dr.l", created_at=t0 + timedelta(hours=2))
    ended = share("old", RecipientKind.USER, "dr.l", revoked_at=t0 + timedelta(minutes=5))
    other = share("other", RecipientKind.USER, "dr.other")
    shares = [pool, mine, ended, other]
    at = (t0 + timedelta(hours=1)).isoformat()
    assert _granting_share(shares, "dr.l", "lille", at) == "pool-share"  # "mine" came later
    later = (t0 + timedelta(hours=3)).isoformat()
    assert _granting_share(shares, "dr.l", "lille", later) == "user-share"  # own share first
    assert _granting_share(shares, "dr.l", "rouen", later) is None
    early = (t0 + timedelta(minutes=1)).isoformat()
    assert _granting_share([ended, other], "dr.l", "lille", early) == "old"
    assert _granting_share([ended, other], "dr.l", "lille", at) is None

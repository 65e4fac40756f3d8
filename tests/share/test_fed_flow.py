"""Second opinions across three real nodes (Caen, Rouen, Lille), through their HTTP APIs.

Caen (the requester's node) keeps the request, its state machine, audit and notices; Lille's
node lists what is asked of its users by asking its peers with signed requests, relays accept /
decline / answer, and proxies annotations on the shared slide to Caen, where they are stored
as ``lille:<user>``. Nothing identifying the slide crosses: the canary slide's planted
identifiers appear in no answer of any new endpoint.
"""

from __future__ import annotations

import json
from contextlib import closing
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from share.federation_notices import notices_router
from share.federation_opinions_router import owner_opinions_router, recipient_opinions_router
from share.signing import NodeKey, sign_request
from tests.share.conftest_fed_nodes import FedNode, fed_nodes, fed_smtp
from tests.share.conftest_federation import (
    CANARIES,
    CANARY_FILE_NAME,
    CanarySlide,
    canary_slide,
)

__all__ = ["canary_slide", "fed_nodes", "fed_smtp"]  # fixtures used by name

POLYGON = {"type": "Polygon", "coordinates": [[[600, 600], [900, 600], [900, 800], [600, 600]]]}


def _caen_slide(caen: httpx.Client) -> str:
    (slide,) = caen.get("/api/slides").json()
    return str(slide["id"])


def ask_lille(
    nodes: dict[str, FedNode],
    question: str = "HGPIN or carcinoma?",
    annotation_ids: tuple[int, ...] = (),
) -> dict[str, Any]:
    """Caen's pathologist drafts and sends a request to Lille's; returns it (Caen's view)."""
    caen, headers = nodes["caen"].client("caen-patho")
    with closing(caen):
        slide_id = _caen_slide(caen)
        body = {
            "slide_ids": [slide_id],
            "regions": [{"slide_id": slide_id, "x": 512, "y": 512, "w": 1024, "h": 768}],
            "question": question,
            "urgency": "urgent",
            "due_at": (datetime.now(UTC) + timedelta(days=2)).isoformat(),
            "consultant": {"centre": "lille", "username": "lille-patho"},
            "annotation_ids": list(annotation_ids),
        }
        created = caen.post("/api/opinions", json=body, headers=headers)
        assert created.status_code == 201, created.text
        sent = caen.post(f"/api/opinions/{created.json()['id']}/send", headers=headers)
        assert sent.status_code == 200, sent.text
        return dict(sent.json())


def _caen_annotations(node: FedNode) -> tuple[int, int]:
    """Two annotations of Caen's pathologist: one to pin to the request, one kept private."""
    caen, headers = node.client("caen-patho")
    with closing(caen):
        slide_id = _caen_slide(caen)
        ids = []
        for comment in ("look here", "private note"):
            body = {"geometry": POLYGON, "comment": comment}
            made = caen.post(f"/api/slides/{slide_id}/annotations", json=body, headers=headers)
            assert made.status_code == 201, made.text
            ids.append(int(made.json()["iain"]["id"]))
        return ids[0], ids[1]


def _assert_clean(data: bytes, slide: CanarySlide, slide_id: str) -> None:
    for text in (*CANARIES, CANARY_FILE_NAME, slide.sha256, slide_id):
        assert text.encode() not in data, f"{text} leaked"


def test_lille_consults_from_its_own_node(
    fed_nodes: dict[str, FedNode], canary_slide: CanarySlide
) -> None:
    pinned, private = _caen_annotations(fed_nodes["caen"])
    request = ask_lille(fed_nodes, annotation_ids=(pinned,))
    oid, slide_id = request["id"], request["slides"][0]["slide_id"]
    lille, lh = fed_nodes["lille"].client("lille-patho")
    rouen, _ = fed_nodes["rouen"].client("rouen-patho")
    caen, ch = fed_nodes["caen"].client("caen-patho")
    admin, _ = fed_nodes["caen"].client("caen-admin")
    with closing(lille), closing(rouen), closing(caen), closing(admin):
        inbox = lille.get("/api/inbox/opinions").json()
        assert inbox["unavailable"] == []
        (item,) = [o for o in inbox["opinions"] if o["id"] == oid]
        assert (item["peer"], item["state"], item["urgency"]) == ("caen", "sent", "urgent")
        (slide,) = item["slides"]
        assert slide["pseudonym"] == request["slides"][0]["pseudonym"] and slide["live"]
        sid = slide["share_id"]
        assert item["regions"] == [
            {
                "share_id": sid,
                "pseudonym": slide["pseudonym"],
                "x": 512,
                "y": 512,
                "w": 1024,
                "h": 768,
            }
        ]
        assert rouen.get("/api/inbox/opinions").json()["opinions"] == []  # not asked of Rouen
        ml, _ = fed_nodes["lille"].client("lille-ml")  # Lille, but no clinician: nothing asked
        with closing(ml):
            assert ml.get("/api/inbox/opinions").json() == {"opinions": [], "unavailable": []}
            assert ml.get(f"/api/inbox/opinions/caen/{oid}").status_code == 404
            assert ml.get(f"/shared/caen/{sid}").status_code == 404
        assert rouen.get(f"/shared/caen/{sid}").status_code == 404

        # Lille answers before accepting: the requester's state machine refuses (409)
        early = {"text": "too early", "agreement": "yes"}
        assert (
            lille.post(f"/api/inbox/opinions/caen/{oid}/answer", json=early, headers=lh).status_code
            == 409
        )
        accepted = lille.post(f"/api/inbox/opinions/caen/{oid}/accept", headers=lh)
        assert accepted.status_code == 200, accepted.text
        assert accepted.json()["state"] == "accepted"
        assert caen.get(f"/api/opinions/{oid}").json()["assignee"] == "lille-patho"

        # reads the shared slide and annotates it through its own node
        info = lille.get(f"/shared/caen/{sid}").json()
        assert info["pseudonym"] == slide["pseudonym"] and info["width"] == 2220
        assert lille.get(f"/shared/caen/{sid}/tiles/0/1_1.jpeg").status_code == 200
        made = lille.post(
            f"/shared/caen/{sid}/annotations",
            json={"geometry": POLYGON, "class_name": "Tumor", "comment": "cribriform here"},
            headers=lh,
        )
        assert made.status_code == 201, made.text
        assert made.json()["iain"]["owner"] == "lille:lille-patho"
        view = "x=0&y=0&width=2220&height=2967"
        seen = lille.get(f"/shared/caen/{sid}/annotations?{view}").json()["features"]
        assert {f["iain"]["id"] for f in seen} == {made.json()["iain"]["id"], pinned}  # not private
        (theirs_pinned,) = [f for f in seen if f["iain"]["id"] == pinned]
        assert theirs_pinned["iain"]["comment"] == ""  # the requester's comment stays home
        assert theirs_pinned["iain"]["owner"] == "caen"  # and so does the requester's name
        density = lille.get(f"/shared/caen/{sid}/annotations/density?{view}&cols=2&rows=2")
        assert sum(map(sum, density.json()["counts"])) == 2  # the private one is not counted
        edit = {"geometry": POLYGON, "version": 1}
        refused = lille.put(f"/shared/caen/{sid}/annotations/{pinned}", json=edit, headers=lh)
        assert refused.status_code == 404  # Caen's annotation: not Lille's to change
        bad = lille.post(f"/shared/caen/{sid}/annotations", json={"geometry": {}}, headers=lh)
        assert bad.status_code == 422
        assert rouen.get(f"/shared/caen/{sid}/annotations?{view}").status_code == 404

        answer = {
            "text": "Cribriform carcinoma, Gleason 4.",
            "agreement": "partly",
            "diagnosis": "Adenocarcinoma",
        }
        answered = lille.post(f"/api/inbox/opinions/caen/{oid}/answer", json=answer, headers=lh)
        assert answered.status_code == 200, answered.text
        at_caen = caen.get(f"/api/opinions/{oid}").json()
        assert at_caen["state"] == "answered"
        assert (
            at_caen["answer"]["text"] == answer["text"] and at_caen["answer"]["centre"] == "lille"
        )
        everything = caen.get(f"/api/slides/{slide_id}/annotations?{view}").json()["features"]
        theirs = [f for f in everything if ":" in f["iain"]["owner"]]
        assert [f["iain"]["owner"] for f in theirs] == ["lille:lille-patho"]
        assert theirs[0]["iain"]["comment"] == "cribriform here"  # Caen's own viewer: in full
        assert {f["iain"]["id"] for f in everything} >= {pinned, private}
        notices = caen.get("/api/notifications").json()
        assert any("answered (partly)" in n["text"] for n in notices if n["opinion_id"] == oid)

        # Caen's admin sees every access of Lille's, by user and centre
        records = admin.get("/api/audit").json()
        by_lille = {r["action"] for r in records if r["actor"] == "lille-patho@lille"}
        assert {
            "federation.opinion.list",
            "federation.opinion.accept",
            "federation.info",
        } <= by_lille
        assert {"federation.annotation.create", "federation.opinion.answer"} <= by_lille
        assert any(
            r["actor"] == "lille:lille-patho" and r["action"] == "annotation.create"
            for r in records
        )
        assert any(
            r["action"] == "opinion.accept" and r["detail"].get("by_centre") == "lille"
            for r in records
        )
        assert any(  # Lille's tile reads, aggregated like local views
            r["action"] == "slide.view"
            and r["actor"] == "lille-patho@lille"
            and r["slide_id"] == slide_id
            for r in records
        )

        # closing revokes the share: Lille's tiles and annotations end at once
        assert caen.post(f"/api/opinions/{oid}/close", headers=ch).status_code == 200
        assert lille.get(f"/shared/caen/{sid}/tiles/0/1_1.jpeg").status_code == 404
        assert lille.get(f"/shared/caen/{sid}/annotations?{view}").status_code == 404
        closed = lille.get(f"/api/inbox/opinions/caen/{oid}").json()
        assert closed["state"] == "closed" and closed["slides"][0]["live"] is False
        assert (
            lille.post(f"/api/inbox/opinions/caen/{oid}/decline", json={}, headers=lh).status_code
            == 409
        )


def test_no_new_endpoint_returns_a_canary(
    fed_nodes: dict[str, FedNode], canary_slide: CanarySlide
) -> None:
    """Every route this flow added, on both nodes (enumerated from the routers: a new route
    fails this test until it is called here)."""
    request = ask_lille(fed_nodes, "canary check")
    oid, slide_id = request["id"], request["slides"][0]["slide_id"]
    caen_node, lille_node = fed_nodes["caen"], fed_nodes["lille"]
    lille, lh = lille_node.client("lille-patho")
    key = _lille_key(lille_node)
    view = "x=0&y=0&width=4000&height=4000"
    inbox = f"/api/inbox/opinions/caen/{oid}"
    with closing(lille):
        sid = lille.get(inbox).json()["slides"][0]["share_id"]
        shared = f"/shared/caen/{sid}/annotations"
        # path template -> [(method, path, body, expected status)], in call order
        recipient: dict[str, list[tuple[str, str, Any, int]]] = {
            "/api/federation/peers": [("GET", "/api/federation/peers", None, 200)],
            "/api/inbox/opinions": [("GET", "/api/inbox/opinions", None, 200)],
            "/api/inbox/opinions/{peer}/{opinion_id}": [("GET", inbox, None, 200)],
            "/api/inbox/opinions/{peer}/{opinion_id}/accept": [
                ("POST", f"{inbox}/accept", {}, 200)
            ],
            "/shared/{peer}/{share_id}/annotations": [
                ("POST", shared, {"geometry": POLYGON, "comment": "lille note"}, 201),
                ("GET", f"{shared}?{view}", None, 200),
            ],
            "/shared/{peer}/{share_id}/annotations/export.geojson": [
                ("GET", f"{shared}/export.geojson", None, 200)
            ],
            "/shared/{peer}/{share_id}/annotations/density": [
                ("GET", f"{shared}/density?{view}&cols=4&rows=4", None, 200)
            ],
            "/shared/{peer}/{share_id}/annotations/{annotation_id}": [
                ("PUT", f"{shared}/{{aid}}", {"geometry": POLYGON, "version": 1}, 200),
                ("DELETE", f"{shared}/{{aid}}?version=2", None, 200),
            ],
            "/api/inbox/opinions/{peer}/{opinion_id}/answer": [
                ("POST", f"{inbox}/answer", {"text": "ok", "agreement": "yes"}, 200)
            ],
            "/api/inbox/opinions/{peer}/{opinion_id}/decline": [
                ("POST", f"{inbox}/decline", {}, 409)  # answered already
            ],
        }
        assert {r.path for r in recipient_opinions_router.routes} == set(recipient)  # type: ignore[attr-defined]
        responses: list[httpx.Response] = []
        aid = 0
        for calls in recipient.values():
            for method, path, body, expected in calls:
                response = lille.request(
                    method, path.replace("{aid}", str(aid)), json=body, headers=lh
                )
                assert response.status_code == expected, f"{method} {path}: {response.text}"
                if method == "POST" and path == shared:
                    aid = response.json()["iain"]["id"]
                responses.append(response)
    owner_ann = f"/federation/shares/{sid}/annotations"
    owner: dict[str, list[tuple[str, str, Any, int]]] = {
        "/federation/opinions": [("GET", "/federation/opinions", None, 200)],
        "/federation/opinions/{opinion_id}": [("GET", f"/federation/opinions/{oid}", None, 200)],
        "/federation/opinions/{opinion_id}/{verb}": [
            ("POST", f"/federation/opinions/{oid}/accept", {}, 409)
        ],
        "/federation/shares/{share_id}/annotations": [
            ("POST", owner_ann, {"geometry": POLYGON}, 201),
            ("GET", f"{owner_ann}?{view}", None, 200),
        ],
        "/federation/shares/{share_id}/annotations/density": [
            ("GET", f"{owner_ann}/density?{view}", None, 200)
        ],
        "/federation/shares/{share_id}/annotations/{annotation_id}": [
            ("PUT", f"{owner_ann}/{{aid}}", {"geometry": POLYGON, "version": 1}, 200),
            ("DELETE", f"{owner_ann}/{{aid}}?version=2", None, 200),
        ],
    }
    assert {r.path for r in owner_opinions_router.routes} == set(owner)  # type: ignore[attr-defined]
    with httpx.Client(base_url=caen_node.url, timeout=20) as peer:
        for calls in owner.values():
            for method, path, body, expected in calls:
                path = path.replace("{aid}", str(aid))
                raw = json.dumps(body).encode() if body is not None else None
                token = sign_request(
                    key, method, path, "caen", "lille-patho", {"groups": ["pool"]}, body=raw
                )
                auth = {"authorization": f"Bearer {token}", "content-type": "application/json"}
                signed = peer.request(method, path, content=raw, headers=auth)
                assert signed.status_code == expected, f"{method} {path}: {signed.text}"
                if method == "POST" and path == owner_ann:
                    aid = signed.json()["iain"]["id"]
                unsigned = peer.request(method, path, content=raw)
                assert unsigned.status_code == 401
                responses += [signed, unsigned]
    notice = {  # owner -> consultant's node: Caen signs, Lille answers
        "opinion_id": oid,
        "kind": "reminder",
        "consultant": {"centre": "lille", "username": "lille-patho"},
        "pseudonyms": [request["slides"][0]["pseudonym"]],
    }
    to_lille: dict[str, list[tuple[str, str, Any, int]]] = {
        "/federation/opinion-notices": [("POST", "/federation/opinion-notices", notice, 200)]
    }
    assert {r.path for r in notices_router.routes} == set(to_lille)  # type: ignore[attr-defined]
    caen_key = NodeKey.from_file("caen", caen_node.home / "node.pem")
    with httpx.Client(base_url=lille_node.url, timeout=20) as peer:
        for calls in to_lille.values():
            for method, path, body, expected in calls:
                raw = json.dumps(body).encode()
                token = sign_request(caen_key, method, path, "lille", "node", body=raw)
                auth = {"authorization": f"Bearer {token}", "content-type": "application/json"}
                signed = peer.request(method, path, content=raw, headers=auth)
                assert signed.status_code == expected, f"{method} {path}: {signed.text}"
                unsigned = peer.request(method, path, content=raw)
                assert unsigned.status_code == 401
                responses += [signed, unsigned]
    for response in responses:
        head = "\n".join(f"{k}: {v}" for k, v in response.headers.items()).encode()
        _assert_clean(head + response.content, canary_slide, slide_id)
    assert json.loads(responses[2].content)["question"] == "canary check"


def _lille_key(node: FedNode) -> Any:
    from share.signing import NodeKey

    return NodeKey.from_file("lille", node.home / "node.pem")


@pytest.mark.parametrize("verb", ["accept", "answer"])
def test_only_the_named_consultant_acts(fed_nodes: dict[str, FedNode], verb: str) -> None:
    request = ask_lille(fed_nodes, f"who may {verb}?")
    oid = request["id"]
    admin, ah = fed_nodes["lille"].client("lille-admin")  # Lille, but not the one asked
    with closing(admin):
        assert all(o["id"] != oid for o in admin.get("/api/inbox/opinions").json()["opinions"])
        body = {"text": "x", "agreement": "yes"} if verb == "answer" else None
        refused = admin.post(f"/api/inbox/opinions/caen/{oid}/{verb}", json=body, headers=ah)
        assert refused.status_code == 404


def test_fuzzed_relay_calls_never_answer_5xx(fed_nodes: dict[str, FedNode]) -> None:
    """Schemathesis over Lille's new operations, aimed at a real request and share at Caen:
    whatever the generated input, Lille answers 4xx (Caen's refusals are relayed as 4xx)."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings

    request = ask_lille(fed_nodes, "fuzz")
    lille, lh = fed_nodes["lille"].client("lille-patho")
    failures: list[str] = []
    with closing(lille):
        inbox = f"/api/inbox/opinions/caen/{request['id']}"
        sid = lille.get(inbox).json()["slides"][0]["share_id"]
        cookie = "; ".join(f"{k}={v}" for k, v in lille.cookies.items())
        schema = schemathesis.openapi.from_dict(lille.get("/openapi.json").json())
        prefixes = ("/api/inbox/", "/api/federation/", "/shared/{peer}/{share_id}/annotations")
        operations = [
            r.ok() for r in schema.get_all_operations() if r.ok().path.startswith(prefixes)
        ]
        assert len(operations) >= 10
        for operation in operations:

            @given(case=operation.as_strategy())
            @settings(
                max_examples=8,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                database=None,
            )
            def check(case: Any) -> None:
                params = case.path_parameters or {}
                if "peer" in params:
                    params["peer"] = "caen"
                if "share_id" in params:
                    params["share_id"] = sid
                if "opinion_id" in params:
                    params["opinion_id"] = request["id"]
                response = case.call(
                    base_url=fed_nodes["lille"].url, headers={"Cookie": cookie, **lh}
                )
                if response.status_code >= 500:
                    failures.append(
                        f"{case.method} {case.formatted_path} -> {response.status_code}"
                    )

            check()
    assert failures == []


def test_a_centre_pool_request_goes_to_whoever_accepts(fed_nodes: dict[str, FedNode]) -> None:
    caen, ch = fed_nodes["caen"].client("caen-patho")
    patho, ph = fed_nodes["lille"].client("lille-patho")
    admin, ah = fed_nodes["lille"].client("lille-admin")
    rouen, _ = fed_nodes["rouen"].client("rouen-patho")
    with closing(caen), closing(patho), closing(admin), closing(rouen):
        slide_id = _caen_slide(caen)
        body = {
            "slide_ids": [slide_id],
            "question": "Anyone at Lille?",
            "due_at": (datetime.now(UTC) + timedelta(days=1)).isoformat(),
            "consultant": {"centre": "lille", "username": ""},
        }
        oid = caen.post("/api/opinions", json=body, headers=ch).json()["id"]
        assert caen.post(f"/api/opinions/{oid}/send", headers=ch).status_code == 200

        def asked(client: httpx.Client) -> bool:
            return any(o["id"] == oid for o in client.get("/api/inbox/opinions").json()["opinions"])

        assert asked(patho) and asked(admin) and not asked(rouen)
        sid = patho.get(f"/api/inbox/opinions/caen/{oid}").json()["slides"][0]["share_id"]
        assert any(s["share_id"] == sid for s in admin.get("/shared").json()["slides"])
        assert admin.post(f"/api/inbox/opinions/caen/{oid}/accept", headers=ah).status_code == 200
        assert not asked(patho)  # assigned to lille-admin now
        assert patho.post(f"/api/inbox/opinions/caen/{oid}/accept", headers=ph).status_code == 404
        assert caen.get(f"/api/opinions/{oid}").json()["assignee"] == "lille-admin"


def test_a_view_only_share_reads_annotations_but_never_writes(
    fed_nodes: dict[str, FedNode],
) -> None:
    caen, ch = fed_nodes["caen"].client("caen-patho")
    lille, lh = fed_nodes["lille"].client("lille-patho")
    with closing(caen), closing(lille):
        body = {
            "slide_id": _caen_slide(caen),
            "recipient": {"kind": "user", "centre": "lille", "name": "lille-patho"},
            "permission": "view",
            "expires_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
        }
        made = caen.post("/api/shares", json=body, headers=ch)
        assert made.status_code == 201, made.text
        sid = made.json()["share_id"]
        listed = {s["share_id"]: s for s in lille.get("/shared").json()["slides"]}
        assert listed[sid]["permission"] == "view"
        base = f"/shared/caen/{sid}/annotations"
        assert lille.get(f"{base}?x=0&y=0&width=100&height=100").status_code == 200
        refused = lille.post(base, json={"geometry": POLYGON}, headers=lh)
        assert refused.status_code == 404  # like an unknown share: nothing to probe
        page = lille.get(f"/shared-view/caen/{sid}", headers={"accept": "text/html"})
        assert page.status_code == 200 and "/shared/caen/" in page.text
        assert (
            lille.get("/shared-view/caen/..%2Fetc", headers={"accept": "text/html"}).status_code
            == 404
        )

"""Annotations over HTTP: kinds, classes, viewport index, concurrency, history, revert, others'
annotations, QuPath GeoJSON round-trip and bad input naming the failing feature."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import httpx

from share import audit
from share.accounts import Accounts
from share.config import ShareSettings
from tests.share.conftest import LiveServer, login, make_app

BASE = "/api/slides/s-caen/annotations"


def rect(x: float, y: float, w: float, h: float) -> dict[str, Any]:
    ring = [[x, y], [x + w, y], [x + w, y + h], [x, y + h], [x, y]]
    return {"type": "Polygon", "coordinates": [ring]}


def ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 32) -> dict[str, Any]:
    ring = [
        [
            round(cx + rx * math.cos(2 * math.pi * i / n), 3),
            round(cy + ry * math.sin(2 * math.pi * i / n), 3),
        ]
        for i in range(n)
    ]
    return {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}


SHAPES: dict[str, dict[str, Any]] = {
    "point": {"type": "Point", "coordinates": [100, 100]},
    "line": {"type": "LineString", "coordinates": [[100, 100], [300, 250]]},
    "rectangle": rect(200, 200, 100, 50),
    "ellipse": ellipse(400, 400, 50, 30),
    "polygon": {"type": "Polygon", "coordinates": [[[0, 0], [50, 0], [25, 40], [0, 0]]]},
    "freehand": {"type": "LineString", "coordinates": [[10, 10], [12, 14], [15, 13], [19, 20]]},
}


def view(client: httpx.Client, x: float, y: float, w: float, h: float, **kw: Any) -> list[Any]:
    r = client.get(BASE, params={"x": x, "y": y, "width": w, "height": h, **kw})
    assert r.status_code == 200, r.text
    features: list[Any] = r.json()["features"]
    return features


def test_kinds_classes_viewport_and_layers(
    new_client: Callable[[], httpx.Client], people: dict[str, str]
) -> None:
    c = new_client()
    h = login(c, "caen-patho")
    ids = {}
    for kind, geometry in SHAPES.items():
        body = {
            "kind": kind,
            "geometry": geometry,
            "class_name": "Tumor",
            "color": "#c80000",
            "comment": f"a {kind}",
            "layer": "mine" if kind != "polygon" else "other",
        }
        r = c.post(BASE, json=body, headers=h)
        assert r.status_code == 201, r.text
        ids[kind] = r.json()["iain"]["id"]
        assert r.json()["iain"]["kind"] == kind and r.json()["iain"]["version"] == 1
        assert r.json()["properties"]["classification"] == {"name": "Tumor", "color": [200, 0, 0]}
    assert c.get("/api/annotation-classes").json() == [{"name": "Tumor", "color": "#c80000"}]
    everything = {f["iain"]["kind"] for f in view(c, -10, -10, 1000, 1000)}
    assert everything == set(SHAPES)
    # Only bboxes meeting the viewport: the ellipse (350..450) and nothing at the origin.
    assert {f["iain"]["kind"] for f in view(c, 420, 380, 100, 100)} == {"ellipse"}
    assert {f["iain"]["kind"] for f in view(c, 0, 0, 30, 30, layer="other")} == {"polygon"}
    assert view(c, 5000, 5000, 10, 10) == []
    limited = c.get(BASE, params={"x": 0, "y": 0, "width": 1000, "height": 1000, "limit": 2})
    assert len(limited.json()["features"]) == 2 and limited.json()["truncated"] is True
    grid = c.get(
        f"{BASE}/density",
        params={"x": 0, "y": 0, "width": 1000, "height": 1000, "cols": 2, "rows": 2},
    ).json()
    # bbox centres: point (100,100), line (200,175), rect (250,225), polygon (25,20),
    # freehand (14.5,15) top-left; ellipse (400,400) top-left too (cells are 500 px).
    assert grid == {"cols": 2, "rows": 2, "counts": [[6, 0], [0, 0]]}
    grid = c.get(
        f"{BASE}/density",
        params={"x": 0, "y": 0, "width": 400, "height": 400, "cols": 2, "rows": 2},
    ).json()
    assert grid["counts"] == [[3, 1], [0, 2]]  # the ellipse (centre 400,400) clamps in
    one = c.get(f"{BASE}/{ids['point']}").json()
    assert one["geometry"] == SHAPES["point"] and one["iain"]["comment"] == "a point"


def test_concurrency_history_revert_and_delete(
    new_client: Callable[[], httpx.Client], accounts: Accounts, people: dict[str, str]
) -> None:
    c = new_client()
    h = login(c, "caen-patho")
    created = c.post(BASE, json={"kind": "rectangle", "geometry": rect(0, 0, 10, 10)}, headers=h)
    aid = created.json()["iain"]["id"]
    url = f"{BASE}/{aid}"
    first = c.put(
        url, json={"kind": "rectangle", "geometry": rect(0, 0, 20, 20), "version": 1}, headers=h
    )
    assert first.status_code == 200 and first.json()["iain"]["version"] == 2
    stale = c.put(
        url, json={"kind": "rectangle", "geometry": rect(5, 5, 1, 1), "version": 1}, headers=h
    )
    assert stale.status_code == 409 and stale.json()["error"] == "conflict"
    assert c.get(url).json()["geometry"] == rect(0, 0, 20, 20)  # the stale write changed nothing
    c.put(
        url,
        json={"kind": "rectangle", "geometry": rect(0, 0, 30, 30), "comment": "x", "version": 2},
        headers=h,
    )
    hist = c.get(f"{url}/history").json()
    assert [v["version"] for v in hist] == [1, 2, 3]
    assert hist[0]["geometry"] == rect(0, 0, 10, 10) and hist[-1]["comment"] == "x"
    reverted = c.post(f"{url}/revert", json={"to_version": 1, "version": 3}, headers=h)
    assert reverted.status_code == 200 and reverted.json()["iain"]["version"] == 4
    assert reverted.json()["geometry"] == rect(0, 0, 10, 10)
    assert view(c, 15, 15, 5, 5) == []  # the spatial index followed the revert
    assert c.delete(url, params={"version": 3}, headers=h).status_code == 409
    assert c.delete(url, params={"version": 4}, headers=h).json() == {"version": 5}
    assert c.get(url).status_code == 404 and view(c, 0, 0, 5, 5) == []
    back = c.post(f"{url}/revert", json={"to_version": 4, "version": 5}, headers=h)
    assert back.status_code == 200 and len(view(c, 0, 0, 5, 5)) == 1
    actions = [r["action"] for r in audit.records(accounts.db, centre_id="caen", slide_id="s-caen")]
    assert actions == [
        "annotation.create",
        "annotation.update",
        "annotation.update",
        "annotation.revert",
        "annotation.delete",
        "annotation.revert",
    ]


def test_others_annotations_read_only_other_centre_hidden(
    new_client: Callable[[], httpx.Client], people: dict[str, str]
) -> None:
    owner, colleague, ml, lille = new_client(), new_client(), new_client(), new_client()
    h = login(owner, "caen-patho")
    body = {"kind": "point", "geometry": SHAPES["point"], "comment": "patient history note"}
    aid = owner.post(BASE, json=body, headers=h).json()["iain"]["id"]
    h2 = login(colleague, "caen-patho2")
    assert colleague.get(f"{BASE}/{aid}").status_code == 200
    edit = {"kind": "point", "geometry": SHAPES["point"], "version": 1}
    assert colleague.put(f"{BASE}/{aid}", json=edit, headers=h2).status_code == 403
    assert colleague.delete(f"{BASE}/{aid}", params={"version": 1}, headers=h2).status_code == 403
    login(ml, "caen-ml")
    seen = ml.get(f"{BASE}/{aid}").json()
    assert seen["iain"]["comment"] == "" and seen["geometry"] == SHAPES["point"]
    in_view = ml.get(BASE, params={"x": 0, "y": 0, "width": 500, "height": 500}).json()
    assert [f["iain"]["comment"] for f in in_view["features"]] == [""]
    mine = owner.get(BASE, params={"x": 0, "y": 0, "width": 500, "height": 500}).json()
    assert [f["iain"]["comment"] for f in mine["features"]] == ["patient history note"]
    login(lille, "lille-patho")
    assert lille.get(f"{BASE}/{aid}").status_code == 404
    assert lille.get(BASE, params={"x": 0, "y": 0, "width": 9, "height": 9}).status_code == 404


QUPATH = {
    "type": "FeatureCollection",
    "features": [
        {
            "type": "Feature",
            "id": "0b1c7b53-8a2a-4c5e-9f0e-0a1a2b3c4d5e",
            "geometry": {
                "type": "Polygon",
                "coordinates": [[[10.5, 20], [40, 20], [40, 60.25], [10.5, 20]]],
            },
            "properties": {
                "objectType": "annotation",
                "name": "Region 1",
                "classification": {"name": "Tumor", "color": [200, 0, 0]},
                "isLocked": False,
            },
        },
        {
            "type": "Feature",
            "id": "1d9b2d36-1111-4c5e-9f0e-0a1a2b3c4d5e",
            "geometry": {
                "type": "Polygon",
                "coordinates": [[[1, 1], [3, 1], [3, 3], [1, 3], [1, 1]]],
            },
            "properties": {
                "objectType": "detection",
                "classification": {"name": "Stroma", "color": [150, 200, 150]},
                "measurements": {"Nucleus: Area": 12.5, "Nucleus: Perimeter": 14.1},
            },
        },
        {
            "type": "Feature",
            "id": "2e0c3e47-2222-4c5e-9f0e-0a1a2b3c4d5e",
            "geometry": {
                "type": "MultiPolygon",
                "coordinates": [
                    [[[100, 100], [110, 100], [110, 110], [100, 100]]],
                    [[[200, 200], [210, 200], [210, 210], [200, 200]]],
                ],
            },
            "properties": {"objectType": "annotation"},
        },
        {
            "type": "Feature",
            "id": "3f1d4f58-3333-4c5e-9f0e-0a1a2b3c4d5e",
            "geometry": {"type": "LineString", "coordinates": [[0, 0], [5, 5]]},
            "properties": {
                "objectType": "annotation",
                "iain": {"kind": "freehand", "comment": "ok"},
            },
        },
    ],
}


def test_qupath_geojson_round_trip(
    new_client: Callable[[], httpx.Client], people: dict[str, str]
) -> None:
    c = new_client()
    h = login(c, "caen-patho")
    r = c.post(f"{BASE}/import", params={"layer": "qupath"}, json=QUPATH, headers=h)
    assert r.status_code == 201 and r.json() == {"imported": 4, "layer": "qupath"}
    exported = c.get(f"{BASE}/export.geojson", params={"layer": "qupath"})
    assert exported.headers["content-type"] == "application/geo+json"
    assert exported.json() == QUPATH
    # Re-importing the export gives the identical collection again.
    c.post(f"{BASE}/import", params={"layer": "again"}, content=exported.content, headers=h)
    assert c.get(f"{BASE}/export.geojson", params={"layer": "again"}).json() == QUPATH
    kinds = {f["id"]: f["iain"]["kind"] for f in view(c, 0, 0, 300, 300, layer="qupath")}
    assert sorted(kinds.values()) == ["freehand", "polygon", "polygon", "polygon"]
    classes = {x["name"]: x["color"] for x in c.get("/api/annotation-classes").json()}
    assert classes == {"Tumor": "#c80000", "Stroma": "#96c896"}


def _feature(geometry: Any, fid: str = "f") -> dict[str, Any]:
    return {"type": "Feature", "id": fid, "geometry": geometry, "properties": {}}


def _collection(bad: dict[str, Any]) -> dict[str, Any]:
    good = _feature(rect(0, 0, 5, 5), "good")
    return {"type": "FeatureCollection", "features": [good, good, bad]}


BAD_FEATURES = [
    (
        _feature({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]]}),
        "not closed",
    ),
    (_feature({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [0, 0]]]}), "at least 4"),
    (_feature({"type": "Point", "coordinates": [True, 1]}), "not a finite number"),
    (_feature({"type": "Point", "coordinates": [1e300, 1]}), "beyond"),
    (_feature({"type": "Circle", "coordinates": [1, 1]}), "geometry type 'Circle'"),
    (_feature({"type": "LineString", "coordinates": [[1, 2], [3]]}), "is not [x, y]"),
    (_feature(None), "geometry must be a GeoJSON object"),
    (
        {
            "type": "Feature",
            "geometry": rect(0, 0, 1, 1),
            "properties": {"classification": {"name": "T", "color": "red"}},
        },
        "color",
    ),
    ({"type": "Thing"}, "not a GeoJSON Feature"),
]


def test_bad_imports_name_the_feature_and_import_nothing(
    accounts: Accounts, settings: ShareSettings, people: dict[str, str]
) -> None:
    small = replace(settings, annotation_max_vertices=1000, import_max_bytes=200_000)
    with LiveServer(make_app(small, accounts.db)) as url, httpx.Client(base_url=url) as c:
        h = login(c, "caen-patho")
        for bad, message in BAD_FEATURES:
            r = c.post(f"{BASE}/import", json=_collection(bad), headers=h)
            assert r.status_code == 422, (message, r.text)
            assert r.json()["detail"].startswith("feature 2"), r.text
            assert message in r.json()["detail"]
        # NaN is not JSON, but Python's parser accepts it: it must still be refused.
        nan = json.dumps(_collection(_feature({"type": "Point", "coordinates": [float("nan"), 1]})))
        r = c.post(f"{BASE}/import", content=nan.encode(), headers=h)
        assert r.status_code == 422 and "feature 2 (id f)" in r.json()["detail"]
        many = _feature({"type": "LineString", "coordinates": [[i, i] for i in range(1001)]}, "big")
        r = c.post(f"{BASE}/import", json=_collection(many), headers=h)
        assert (
            r.status_code == 422
            and r.json()["detail"] == "feature 2 (id big): more than 1000 vertices"
        )
        huge = _feature({"type": "LineString", "coordinates": [[i, i] for i in range(20_000)]})
        assert c.post(f"{BASE}/import", json=_collection(huge), headers=h).status_code == 413
        for body in (b"{not json", b"[1, 2]", b'{"type": "FeatureCollection"}'):
            assert c.post(f"{BASE}/import", content=body, headers=h).status_code == 422
        bad_create = {"kind": "rectangle", "geometry": SHAPES["ellipse"]}
        r = c.post(BASE, json=bad_create, headers=h)
        assert r.status_code == 422 and "axis-aligned" in r.json()["detail"]
        assert (
            c.post(BASE, json={"kind": "point", "geometry": SHAPES["line"]}, headers=h).status_code
            == 422
        )
        for params in (
            {"x": "nan", "y": 0, "width": 1, "height": 1},
            {"x": 0, "y": 0, "width": 0, "height": 1},
            {},
        ):
            assert c.get(BASE, params=params).status_code == 422
        assert c.get(f"{BASE}/export.geojson").json()["features"] == []  # all or nothing

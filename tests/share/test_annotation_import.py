"""The batched GeoJSON import (``share.annotation_import``): what its array fast path takes
round-trips like what the per-feature validator takes, errors name the first failing feature
across paths and batches, nothing is left behind, and the viewport finds what was imported."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from sqlalchemy import text

from share import annotations as store
from share.accounts import Accounts
from share.errors import InvalidInputError

BOW_TIE = {"type": "Polygon", "coordinates": [[[0, 0], [10, 10], [10, 0], [0, 10], [0, 0]]]}


def _poly(x: float, y: float, r: float = 6.0, *, ints: bool = False) -> dict[str, Any]:
    ring = [[x, y], [x + r, y], [x + r, y + r], [x, y + r], [x, y]]
    if ints:
        ring = [[int(a), int(b)] for a, b in ring]
    return {"type": "Polygon", "coordinates": [ring]}


def _feature(i: int, geometry: Any, **props: Any) -> dict[str, Any]:
    props = {"objectType": "annotation"} | props  # (the export always writes it)
    return {"type": "Feature", "id": f"f{i}", "geometry": geometry, "properties": props}


def _varied(n: int) -> dict[str, Any]:
    """Features for both paths: plain polygons (fast), holes, integers, measurements and
    unicode (fast), a rectangle kind, lines, points, multipolygons, an extra geometry
    member, a comment (per-feature path)."""
    rng = random.Random(3)
    features = []
    for i in range(n):
        x, y = rng.uniform(0, 5000), rng.uniform(0, 5000)
        match i % 9:
            case 0:
                f = _feature(i, _poly(x, y), objectType="detection")
            case 1:
                outer = _poly(x, y, 40)["coordinates"][0]
                hole = [[x + 10, y + 10], [x + 20, y + 10], [x + 20, y + 20], [x + 10, y + 10]]
                f = _feature(i, {"type": "Polygon", "coordinates": [outer, hole]})
            case 2:
                f = _feature(
                    i,
                    _poly(round(x), round(y), ints=True),
                    objectType="cell",
                    classification={"name": "Lymphocyte", "color": [10, 20, 30]},
                    measurements={"Area µm²": rng.random(), "n": i},
                    name="Zellkern é",
                )
            case 3:
                f = _feature(i, _poly(x, y, 8.0), iain={"kind": "rectangle"})
            case 4:
                f = _feature(i, {"type": "LineString", "coordinates": [[x, y], [x + 5, y + 1]]})
            case 5:
                f = _feature(i, {"type": "Point", "coordinates": [x, y]})
            case 6:
                two = [_poly(x, y)["coordinates"], _poly(x + 50, y)["coordinates"]]
                f = _feature(i, {"type": "MultiPolygon", "coordinates": two})
            case 7:
                f = _feature(i, {**_poly(x, y), "bbox": [x, y, x + 6, y + 6]})
            case _:
                f = _feature(i, _poly(x, y), iain={"kind": "ellipse", "comment": "note"})
        features.append(f)
    return {"type": "FeatureCollection", "features": features}


def test_round_trip_through_both_paths_and_batches(accounts: Accounts, people: Any) -> None:
    p, slide = accounts.principal("caen-patho"), accounts.slide("s-caen")
    assert slide is not None
    collection = _varied(2000)
    body = json.dumps(collection, indent=1, ensure_ascii=False).encode()  # whitespace too
    assert store.import_geojson(accounts.db, p, slide, body, layer="a", batch=300) == 2000
    exported = json.loads("".join(store.export_geojson(accounts.db, p, slide, layer="a")))
    assert exported == collection
    # An already parsed collection takes the per-feature path: same rows.
    store.import_geojson(accounts.db, p, slide, collection, layer="b")
    again = json.loads("".join(store.export_geojson(accounts.db, p, slide, layer="b")))
    assert again == collection
    classes = {c["name"]: c["color"] for c in store.list_classes(accounts.db)}
    assert classes == {"Lymphocyte": "#0a141e"}
    # The viewport answer is what a scan of the bboxes says.
    view = store.Viewport(1000, 1200, 900, 700)
    got = json.loads(store.query_viewport(accounts.db, p, slide, view, layer="a"))
    ids = {f["id"] for f in got["features"]}
    expected = set()
    for f in collection["features"]:
        xs, ys = _coords(f["geometry"]["coordinates"])
        if min(xs) <= 1900 and max(xs) >= 1000 and min(ys) <= 1900 and max(ys) >= 1200:
            expected.add(f["id"])
    assert ids == expected and len(ids) > 20


def _coords(value: Any) -> tuple[list[float], list[float]]:
    if isinstance(value[0], int | float):
        return [value[0]], [value[1]]
    xs: list[float] = []
    ys: list[float] = []
    for v in value:
        x, y = _coords(v)
        xs += x
        ys += y
    return xs, ys


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (BOW_TIE, "polygon is not valid: Self-intersection[5 5]"),
        (
            {"type": "MultiPolygon", "coordinates": [_poly(0, 0, 10)["coordinates"]] * 2},
            "multipolygon is not valid",
        ),
        ({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 2]]]}, "not closed"),
        ({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1e9, 1], [0, 0]]]}, "beyond"),
        ({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1, 1], [0, 0]]]}, "[x, y]"),
        ({"type": "Polygon", "coordinates": []}, "needs at least one ring"),
    ],
)
def test_the_first_bad_feature_is_named_and_nothing_is_kept(
    accounts: Accounts, people: Any, bad: dict[str, Any], message: str
) -> None:
    p, slide = accounts.principal("caen-patho"), accounts.slide("s-caen")
    assert slide is not None
    features = [_feature(i, _poly(10 * i, 0)) for i in range(700)]
    features[612] = _feature(612, bad)  # in the third batch of 250
    features[650] = _feature(650, {"type": "Point", "coordinates": [1, "x"]})  # later: unnamed
    body = json.dumps({"type": "FeatureCollection", "features": features}).encode()
    with pytest.raises(InvalidInputError) as err:
        store.import_geojson(accounts.db, p, slide, body, batch=250)
    assert str(err.value).startswith("feature 612 (id f612): ") and message in str(err.value)
    assert (
        "".join(store.export_geojson(accounts.db, p, slide))
        == '{"type":"FeatureCollection","features":[]}'
    )


def test_a_per_feature_failure_after_a_bad_polygon_names_the_polygon(
    accounts: Accounts, people: Any
) -> None:
    p, slide = accounts.principal("caen-patho"), accounts.slide("s-caen")
    assert slide is not None
    features = [_feature(i, _poly(10 * i, 0)) for i in range(10)]
    features[3] = _feature(3, BOW_TIE)  # found by the array checks, after the loop
    features[5] = {"type": "Feature", "geometry": None}  # found in the loop
    with pytest.raises(InvalidInputError, match=r"^feature 3 \(id f3\): polygon is not valid"):
        store.import_geojson(accounts.db, p, slide, json.dumps(features).encode())


def test_bow_tie_create_is_refused(accounts: Accounts, people: Any) -> None:
    p, slide = accounts.principal("caen-patho"), accounts.slide("s-caen")
    assert slide is not None
    with pytest.raises(InvalidInputError, match="Self-intersection"):
        store.create(accounts.db, p, slide, store.AnnotationInput(geometry=BOW_TIE))


def test_sql_feature_text_is_the_python_one(accounts: Accounts, people: Any) -> None:
    """The viewport's Feature text built by the database says what ``_feature_text`` says."""
    p, slide = accounts.principal("caen-patho"), accounts.slide("s-caen")
    assert slide is not None
    features: list[Any] = _varied(40)["features"]
    features[0].pop("id")  # no uuid: no "id" member
    features[8]["properties"]["iain"]["comment"] = 'quote " slash \\ tab \t é ✓'
    store.import_geojson(accounts.db, p, slide, features)
    params = {"ranges": "[[0, 9223372036854775807]]", "slide": "s-caen"}
    params |= {"x0": -1e8, "y0": -1e8, "x1": 1e8, "y1": 1e8}
    sqlite = accounts.db.dialect == "sqlite"
    texts_sql = store.VIEWPORT_SQL_SQLITE if sqlite else store.VIEWPORT_SQL_PG
    rows_sql = store._VIEWPORT_ROWS_SQL_SQLITE if sqlite else store._VIEWPORT_ROWS_SQL_PG
    with accounts.db.engine.connect() as conn:
        texts = conn.execute(text(texts_sql + " ORDER BY a.id"), params).scalars().all()
        rows = conn.execute(text(rows_sql + " ORDER BY a.id"), params).all()
    assert len(rows) == 40
    assert [json.loads(t) for t in texts] == [json.loads(store._feature_text(r)) for r in rows]
    assert sum('"id":' not in t.split('"geometry"')[0] for t in texts) == 1


def test_deep_nesting_is_a_named_4xx(accounts: Accounts, people: Any) -> None:
    p, slide = accounts.principal("caen-patho"), accounts.slide("s-caen")
    assert slide is not None
    deep = b"[" * 5000 + b"]" * 5000
    good = json.dumps(_feature(0, _poly(0, 0))).encode()
    for props in (deep, b'{"a": ' + deep + b"}"):
        body = b'{"type": "FeatureCollection", "features": [' + good + b", "
        body += b'{"type": "Feature", "geometry": null, "properties": ' + props + b"}]}"
        with pytest.raises(InvalidInputError, match=r"feature 1|not JSON"):
            store.import_geojson(accounts.db, p, slide, body)
    with pytest.raises(InvalidInputError):
        store.import_geojson(accounts.db, p, slide, deep)


def test_a_large_postgresql_import_refreshes_the_planner_statistics(
    accounts: Accounts, people: Any
) -> None:
    if accounts.db.dialect != "postgresql":
        return
    p, slide = accounts.principal("caen-patho"), accounts.slide("s-caen")
    assert slide is not None
    features = [_feature(i, _poly(i % 1000 * 10, i // 1000 * 10)) for i in range(10_000)]
    store.import_geojson(accounts.db, p, slide, json.dumps(features).encode())
    with accounts.db.engine.connect() as conn:
        analyzed = conn.execute(
            text("SELECT last_analyze FROM pg_stat_user_tables WHERE relname = 'annotations'")
        ).scalar()
    assert analyzed is not None

"""The streamed export splices the stored JSON text instead of parsing it: its bytes must be
those of the ORM-and-json path it replaced (``_feature`` per row), number spellings and key
orders included, on both databases."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from share import annotations as store
from share.accounts import Accounts
from share.geometry import Kind
from share.models import Annotation

# Number spellings Python's json would write otherwise (exponent, trailing zeros, -0, 17
# digits, tiny), spelled as Python writes them, integers; kinds that differ from the type's.
_RINGS = [
    "[[1e2,2],[30.50,2],[30.5,20.0],[1E2,2]]",
    "[[-0,0],[10,0],[10,10],[-0,0]]",
    "[[0.10000000000000001,0],[10,0],[10,10],[0.10000000000000001,0]]",
    "[[0.00001,0],[10,0],[10,10],[0.00001,0]]",
    "[[1.5,2.25],[30.125,2],[30,20.0],[1.5,2.25]]",
    "[[1,2],[30,2],[30,20],[1,2]]",
]


def _body() -> bytes:
    features = []
    for i, ring in enumerate(_RINGS):
        props = ['"objectType": "detection"']
        if i % 2:
            props.append('"classification": {"name": "Tumor", "color": [200, 0, 0]}')
        if i == 3:
            props.append('"measurements": {"a": 1e-7, "b": 2.50, "c": "x\\"y"}')
        if i == 4:
            props.append('"iain": {"kind": "ellipse", "comment": "é note"}')
        geometry = f'{{"type": "Polygon", "coordinates": [{ring}]}}'
        features.append(
            f'{{"type": "Feature", "id": "f{i}", "geometry": {geometry}, '
            f'"properties": {{{", ".join(props)}}}}}'
        )
    features.append('{"type": "Feature", "geometry": {"type": "Point", "coordinates": [5, 6]}}')
    return ('{"type": "FeatureCollection", "features": [' + ", ".join(features) + "]}").encode()


def _reference(accounts: Accounts, slide_id: str) -> str:
    """The export as the ORM path wrote it."""
    with accounts.db.session() as s:
        rows = s.scalars(
            select(Annotation)
            .where(Annotation.slide_id == slide_id, Annotation.deleted.is_(False))
            .order_by(Annotation.id)
        )
        parts = [
            store._dumps(store._feature(a, "", pseudonymised=False, export=True)) for a in rows
        ]
    return '{"type":"FeatureCollection","features":[' + ",".join(parts) + "]}"


def test_export_bytes_equal_the_orm_path(accounts: Accounts, people: Any) -> None:
    p, slide = accounts.principal("caen-patho"), accounts.slide("s-caen")
    assert slide is not None
    assert store.import_geojson(accounts.db, p, slide, _body()) == len(_RINGS) + 1
    # Properties holding the keys the export adds go through _feature too.
    odd = {"objectType": "tile", "iain": {"note": 1}, "x": [1.0, -0.0]}
    geometry = {"type": "LineString", "coordinates": [[0, 0], [3.25, 4]]}
    store.create(accounts.db, p, slide, store.AnnotationInput(geometry, properties=odd))
    store.create(
        accounts.db,
        p,
        slide,
        store.AnnotationInput(geometry, kind=Kind.FREEHAND, comment="c"),
    )
    expected = _reference(accounts, slide.slide_id)
    got = "".join(store.export_geojson(accounts.db, p, slide, batch=3))
    assert got == expected
    assert len(json.loads(got)["features"]) == len(_RINGS) + 3
    # Spliced rows really are spliced: the stored spelling of a plain ring is in the output.
    assert "[[1.5,2.25],[30.125,2]" in got
    empty = accounts.slide("s-caen-2")
    assert empty is not None
    assert "".join(store.export_geojson(accounts.db, p, empty)) == _reference(accounts, "s-caen-2")

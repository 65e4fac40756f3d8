"""Annotations: create / edit with optimistic concurrency, history and revert, viewport queries
on the spatial index, QuPath GeoJSON import and export.

Every function takes the caller's ``Principal`` and the slide's ``SlideRef`` (already checked
visible by the slide access hook) and asks ``authorize`` for the annotation itself: reading
needs ANNOTATION_READ, changing needs ANNOTATION_WRITE (own annotations only). Coordinates are
level-0 pixels, (x, y). Past states are kept in ``annotation_history`` (copy on write), so an
import of 10^6 features writes 10^6 rows, not 2 x 10^6.

QuPath round-trip: a feature's ``properties`` are stored verbatim (minus ``objectType`` and our
``iain`` block, which have columns) and its geometry as compact JSON text, so exporting what
was imported gives the same FeatureCollection back.
"""

from __future__ import annotations

import json
import logging
import re
import uuid as uuidlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, delete, insert, select, text, update
from sqlalchemy.orm import Session

from share import audit
from share.accounts import now_utc
from share.annotation_import import (
    ROW_COLUMNS,
    FastFields,
    ImportRow,
    features_of,
    parse_body,
    paused_gc,
    prepare_batch,
)
from share.annotation_write import write_rows
from share.authz import Action, AnnotationRef, Principal, SlideRef, authorize
from share.db import Database
from share.errors import ConflictError, ForbiddenError, InvalidInputError, NotFoundError
from share.geometry import Bbox, Kind, infer_kind, validate_geometry
from share.models import Annotation, AnnotationClass, AnnotationVersion, User
from share.spatial import cell_key, viewport_ranges

__all__ = [
    "AnnotationInput",
    "Limits",
    "Viewport",
    "create",
    "density",
    "export_geojson",
    "get",
    "history",
    "import_geojson",
    "list_classes",
    "query_viewport",
    "remove",
    "revert",
    "update_annotation",
]

logger = logging.getLogger(__name__)

OBJECT_TYPES = frozenset({"annotation", "detection", "tile", "cell"})
COLOR_RE = re.compile(r"^#[0-9a-fA-F]{6}$")
DEFAULT_COLOR = "#ffcc00"


# One encoder instance: json.dumps with non-default options builds a new one per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _dumps(obj: Any) -> str:
    return _ENCODER.encode(obj)


@dataclass(frozen=True)
class Limits:
    """Input bounds: a single feature past ``max_vertices`` is refused (4xx naming it)."""

    max_vertices: int = 100_000
    max_features: int = 2_000_000
    max_comment: int = 10_000


@dataclass(frozen=True)
class AnnotationInput:
    geometry: Any
    kind: Kind | None = None
    class_name: str | None = None
    color: str | None = None  # colour of the class when it is new
    comment: str = ""
    layer: str = "default"
    object_type: str = "annotation"
    properties: dict[str, Any] = field(default_factory=dict)
    uuid: str = ""


@dataclass(frozen=True)
class Viewport:
    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True)
class _Row:
    """A validated annotation ready for insert/update."""

    kind: Kind
    bbox: Bbox
    geometry: str
    properties: str
    class_name: str | None
    comment: str
    layer: str
    object_type: str
    uuid: str


def _rgb(color: str) -> list[int]:
    return [int(color[i : i + 2], 16) for i in (1, 3, 5)]


def _hex(rgb: Any, where: str) -> str:
    if (
        not isinstance(rgb, list)
        or len(rgb) != 3
        or not all(type(c) is int and 0 <= c <= 255 for c in rgb)
    ):
        raise InvalidInputError(f"{where}: classification color must be [r, g, b] in 0..255")
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _prepare(item: AnnotationInput, where: str, limits: Limits) -> _Row:
    kind, bbox = validate_geometry(
        item.geometry, item.kind, where=where, max_vertices=limits.max_vertices
    )
    if item.object_type not in OBJECT_TYPES:
        raise InvalidInputError(f"{where}: objectType {item.object_type!r:.40} unknown")
    if len(item.comment) > limits.max_comment:
        raise InvalidInputError(f"{where}: comment longer than {limits.max_comment} characters")
    if not item.layer or len(item.layer) > 100:
        raise InvalidInputError(f"{where}: layer name must be 1-100 characters")
    if item.class_name is not None and not 0 < len(item.class_name) <= 100:
        raise InvalidInputError(f"{where}: class name must be 1-100 characters")
    if item.color is not None and not COLOR_RE.match(item.color):
        raise InvalidInputError(f"{where}: color must be #rrggbb")
    if len(item.uuid) > 64:
        raise InvalidInputError(f"{where}: id longer than 64 characters")
    return _Row(
        kind=kind,
        bbox=bbox,
        geometry=_dumps(item.geometry),
        properties=_dumps(item.properties),
        class_name=item.class_name,
        comment=item.comment,
        layer=item.layer,
        object_type=item.object_type,
        uuid=item.uuid,
    )


_INSERT_COLUMNS = (
    "uuid",
    "kind",
    "object_type",
    "class_name",
    "comment",
    "layer",
    "geometry",
    "properties",
    "min_x",
    "min_y",
    "max_x",
    "max_y",
    "cell",
)


def _values(row: _Row) -> dict[str, Any]:
    b = row.bbox
    return {
        "uuid": row.uuid,
        "kind": row.kind.value,
        "object_type": row.object_type,
        "class_name": row.class_name,
        "comment": row.comment,
        "layer": row.layer,
        "geometry": row.geometry,
        "properties": row.properties,
        "min_x": b.min_x,
        "min_y": b.min_y,
        "max_x": b.max_x,
        "max_y": b.max_y,
        "cell": cell_key(b.min_x, b.min_y, b.max_x, b.max_y),
    }


def _ensure_classes(s: Session | Connection, colors: dict[str, str]) -> None:
    if not colors:
        return
    have = set(
        s.execute(
            select(AnnotationClass.name).where(AnnotationClass.name.in_(list(colors)))
        ).scalars()
    )
    new = [{"name": n, "color": c} for n, c in colors.items() if n not in have]
    if new:
        s.execute(insert(AnnotationClass), new)


def _feature(
    a: Annotation | Any, owner: str, *, pseudonymised: bool, export: bool
) -> dict[str, Any]:
    """GeoJSON Feature; QuPath keys in ``properties``, IAIN state in the ``iain`` member."""
    props: dict[str, Any] = {"objectType": a.object_type, **json.loads(a.properties)}
    iain: dict[str, Any] = {}
    geometry = json.loads(a.geometry)
    if a.kind != infer_kind(geometry["type"]).value:
        iain["kind"] = a.kind
    if a.comment and not pseudonymised:
        iain["comment"] = a.comment
    if pseudonymised:
        props.pop("name", None)
    feature: dict[str, Any] = {"type": "Feature", "geometry": geometry, "properties": props}
    if a.uuid:
        feature["id"] = a.uuid
    if export:
        if iain:
            props["iain"] = iain
    else:
        feature["iain"] = {
            "id": a.id,
            "kind": a.kind,
            "layer": a.layer,
            "owner": owner,
            "class": a.class_name,
            "comment": "" if pseudonymised else a.comment,
            "version": a.version,
        }
    return feature


def _snapshot(a: Annotation) -> str:
    return _dumps(
        {
            "uuid": a.uuid,
            "kind": a.kind,
            "object_type": a.object_type,
            "class_name": a.class_name,
            "comment": a.comment,
            "layer": a.layer,
            "geometry": a.geometry,
            "properties": a.properties,
            "min_x": a.min_x,
            "min_y": a.min_y,
            "max_x": a.max_x,
            "max_y": a.max_y,
            "deleted": a.deleted,
        }
    )


def _owner_name(s: Session, owner_id: int) -> str:
    return s.scalar(select(User.username).where(User.id == owner_id)) or "?"


def _load(s: Session, slide: SlideRef, annotation_id: int) -> Annotation:
    a = s.get(Annotation, annotation_id)
    if a is None or a.slide_id != slide.slide_id or a.deleted:
        raise NotFoundError(f"annotation {annotation_id} not found on this slide")
    return a


def _check(p: Principal, action: Action, slide: SlideRef, owner_id: int | None) -> bool:
    decision = authorize(p, action, AnnotationRef(slide, owner_id))
    if not decision:
        raise ForbiddenError(f"annotation: {decision.reason}")
    return decision.pseudonymised


def _audit(s: Session, p: Principal, slide: SlideRef, op: str, detail: dict[str, Any]) -> None:
    audit.append(
        s,
        actor=p.username,
        action=f"annotation.{op}",
        centre_id=slide.centre,
        slide_id=slide.slide_id,
        detail=detail,
    )


def create(
    db: Database, p: Principal, slide: SlideRef, item: AnnotationInput, limits: Limits = Limits()
) -> dict[str, Any]:
    """Add one annotation owned by the caller (version 1)."""
    pseudo = _check(p, Action.ANNOTATION_WRITE, slide, None)
    row = _prepare(item, "annotation", limits)
    props = json.loads(row.properties)
    if row.class_name is not None:
        props["classification"] = {
            "name": row.class_name,
            "color": _rgb(item.color or DEFAULT_COLOR),
        }
    values = _values(row) | {"properties": _dumps(props)}
    values["uuid"] = row.uuid or str(uuidlib.uuid4())
    with db.session() as s:
        if row.class_name is not None:
            _ensure_classes(s, {row.class_name: item.color or DEFAULT_COLOR})
        a = Annotation(
            **values,
            slide_id=slide.slide_id,
            owner_id=p.user_id,
            version=1,
            deleted=False,
            updated_at=now_utc(),
        )
        s.add(a)
        s.flush()
        _audit(s, p, slide, "create", {"id": a.id})
        return _feature(a, p.username, pseudonymised=pseudo, export=False)


def get(db: Database, p: Principal, slide: SlideRef, annotation_id: int) -> dict[str, Any]:
    with db.session() as s:
        a = _load(s, slide, annotation_id)
        pseudo = _check(p, Action.ANNOTATION_READ, slide, a.owner_id)
        return _feature(a, _owner_name(s, a.owner_id), pseudonymised=pseudo, export=False)


def _replace(
    s: Session, p: Principal, a: Annotation, expected_version: int, values: dict[str, Any], op: str
) -> None:
    """Compare-and-set on ``version``: a stale client gets ConflictError (409)."""
    if "min_x" in values:  # a revert's snapshot has the bbox, not the grid key
        keys = ("min_x", "min_y", "max_x", "max_y")
        values = values | {"cell": cell_key(*(values[k] for k in keys))}
    s.add(
        AnnotationVersion(
            annotation_id=a.id,
            version=a.version,
            actor=p.username,
            at=now_utc(),
            op=op,
            snapshot=_snapshot(a),
        )
    )
    result = s.execute(
        update(Annotation)
        .where(Annotation.id == a.id, Annotation.version == expected_version)
        .values(**values, version=expected_version + 1, updated_at=now_utc())
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise ConflictError(
            f"annotation {a.id} is at version {a.version}, not {expected_version}: reload it"
        )
    s.refresh(a)


def update_annotation(
    db: Database,
    p: Principal,
    slide: SlideRef,
    annotation_id: int,
    item: AnnotationInput,
    version: int,
    limits: Limits = Limits(),
) -> dict[str, Any]:
    """Replace geometry / class / comment / layer of an own annotation at ``version``."""
    row = _prepare(item, f"annotation {annotation_id}", limits)
    with db.session() as s:
        a = _load(s, slide, annotation_id)
        pseudo = _check(p, Action.ANNOTATION_WRITE, slide, a.owner_id)
        if a.version != version:
            raise ConflictError(
                f"annotation {a.id} is at version {a.version}, not {version}: reload it"
            )
        props = json.loads(a.properties) | json.loads(row.properties)
        if row.class_name is not None:
            color = s.scalar(
                select(AnnotationClass.color).where(AnnotationClass.name == row.class_name)
            )
            color = color or item.color or DEFAULT_COLOR
            _ensure_classes(s, {row.class_name: color})
            props["classification"] = {"name": row.class_name, "color": _rgb(color)}
        else:
            props.pop("classification", None)
        values = _values(row) | {"properties": _dumps(props), "uuid": a.uuid}
        _replace(s, p, a, version, values, "update")
        _audit(s, p, slide, "update", {"id": a.id, "version": a.version})
        return _feature(a, p.username, pseudonymised=pseudo, export=False)


def remove(db: Database, p: Principal, slide: SlideRef, annotation_id: int, version: int) -> int:
    """Soft-delete (kept in history, revertible); returns the new version."""
    with db.session() as s:
        a = _load(s, slide, annotation_id)
        _check(p, Action.ANNOTATION_WRITE, slide, a.owner_id)
        _replace(s, p, a, version, {"deleted": True}, "delete")
        _audit(s, p, slide, "delete", {"id": a.id, "version": a.version})
        return a.version


def history(
    db: Database, p: Principal, slide: SlideRef, annotation_id: int
) -> list[dict[str, Any]]:
    """Past versions, oldest first, then the current one."""
    with db.session() as s:
        a = s.get(Annotation, annotation_id)
        if a is None or a.slide_id != slide.slide_id:
            raise NotFoundError(f"annotation {annotation_id} not found on this slide")
        pseudo = _check(p, Action.ANNOTATION_READ, slide, a.owner_id)
        rows = s.scalars(
            select(AnnotationVersion)
            .where(AnnotationVersion.annotation_id == a.id)
            .order_by(AnnotationVersion.version)
        ).all()
        out = []
        for r in rows:
            snap = json.loads(r.snapshot)
            out.append(
                {
                    "version": r.version,
                    "replaced_by": r.actor,
                    "replaced_at": r.at.isoformat(),
                    "op": r.op,
                    "geometry": json.loads(snap["geometry"]),
                    "class": snap["class_name"],
                    "comment": "" if pseudo else snap["comment"],
                    "deleted": snap["deleted"],
                }
            )
        out.append(
            {
                "version": a.version,
                "current": True,
                "geometry": json.loads(a.geometry),
                "class": a.class_name,
                "comment": "" if pseudo else a.comment,
                "deleted": a.deleted,
            }
        )
        return out


def revert(
    db: Database, p: Principal, slide: SlideRef, annotation_id: int, to_version: int, version: int
) -> dict[str, Any]:
    """Make version ``to_version``'s state current again (as a new version)."""
    with db.session() as s:
        a = s.get(Annotation, annotation_id)
        if a is None or a.slide_id != slide.slide_id:
            raise NotFoundError(f"annotation {annotation_id} not found on this slide")
        pseudo = _check(p, Action.ANNOTATION_WRITE, slide, a.owner_id)
        snap = s.scalar(
            select(AnnotationVersion.snapshot).where(
                AnnotationVersion.annotation_id == a.id, AnnotationVersion.version == to_version
            )
        )
        if snap is None:
            raise NotFoundError(f"annotation {a.id} has no past version {to_version}")
        _replace(s, p, a, version, json.loads(snap), "revert")
        _audit(s, p, slide, "revert", {"id": a.id, "to": to_version, "version": a.version})
        return _feature(a, _owner_name(s, a.owner_id), pseudonymised=pseudo, export=False)


def list_classes(db: Database) -> list[dict[str, str]]:
    with db.session() as s:
        rows = s.execute(select(AnnotationClass.name, AnnotationClass.color).order_by("name"))
        return [{"name": n, "color": c} for n, c in rows]


# The key ranges (a JSON array of [lo, hi]) drive a nested loop of range scans on
# (slide_id, cell); CROSS JOIN pins that order, and with it the answer's: coarse grid levels
# (large shapes) first, then rows of cells, then ids. tests/share/test_spatial.py checks the plan.
# The viewport answer's Feature text, built by SQLite from the stored JSON text (the same
# bytes _feature_text writes; the hot path of a pan at 10^6 annotations).
_FEATURE_TEXT_SQLITE = (
    """'{"type":"Feature"' || iif(a.uuid <> '', ',"id":' || json_quote(a.uuid), '') """
    """|| ',"geometry":' || a.geometry || ',"properties":{"objectType":' """
    """|| json_quote(a.object_type) """
    """|| iif(a.properties = '{}', '}', ',' || substr(a.properties, 2)) || ',"iain":' """
    "|| json_object('id', a.id, 'kind', a.kind, 'layer', a.layer, 'owner', u.username, "
    "'class', a.class_name, 'comment', a.comment, 'version', a.version) || '}'"
)
# The key ranges (a JSON array of [lo, hi]) drive a nested loop of range scans on
# (slide_id, cell); CROSS JOIN pins that order, and with it the answer's: coarse grid levels
# (large shapes) first, then rows of cells, then ids. tests/share/test_spatial.py checks the plan.
_VIEWPORT_FROM_SQLITE = (
    "FROM json_each(:ranges) g CROSS JOIN annotations a CROSS JOIN users u "
    "WHERE a.slide_id = :slide AND a.cell BETWEEN g.value ->> 0 AND g.value ->> 1 "
    "AND a.min_x <= :x1 AND a.max_x >= :x0 AND a.min_y <= :y1 AND a.max_y >= :y0 "
    "AND NOT a.deleted AND u.id = a.owner_id"
)
VIEWPORT_SQL_SQLITE = f"SELECT {_FEATURE_TEXT_SQLITE} AS feature {_VIEWPORT_FROM_SQLITE}"
# (pseudonymised callers: the columns, for _feature to drop what they may not see)
_VIEWPORT_ROWS_SQL_SQLITE = f"SELECT a.*, u.username AS owner {_VIEWPORT_FROM_SQLITE}"


_FEATURE_TEXT_PG = (
    """'{"type":"Feature"' || CASE WHEN a.uuid <> '' THEN ',"id":' || to_json(a.uuid)::text """
    """ELSE '' END || ',"geometry":' || a.geometry || ',"properties":{"objectType":' """
    """|| to_json(a.object_type)::text """
    """|| CASE WHEN a.properties = '{}' THEN '}' ELSE ',' || substr(a.properties, 2) END """
    """|| ',"iain":' || json_build_object('id', a.id, 'kind', a.kind, 'layer', a.layer, """
    """'owner', u.username, 'class', a.class_name, 'comment', a.comment, """
    """'version', a.version)::text || '}'"""
)
# The same key ranges as on SQLite; LATERAL makes each range one scan of (slide_id, cell)
# (OFFSET 0 keeps the planner from flattening it into one sequential scan, measured 435 ms).
_RANGES_PG = (
    "FROM jsonb_array_elements(CAST(:ranges AS jsonb)) g CROSS JOIN LATERAL "
    "(SELECT * FROM annotations a WHERE a.slide_id = :slide "
    "AND a.cell BETWEEN (g ->> 0)::bigint AND (g ->> 1)::bigint OFFSET 0) a "
)
_VIEWPORT_FROM_PG = (
    _RANGES_PG + "JOIN users u ON u.id = a.owner_id "
    "WHERE a.min_x <= :x1 AND a.max_x >= :x0 AND a.min_y <= :y1 AND a.max_y >= :y0 "
    "AND NOT a.deleted"
)
VIEWPORT_SQL_PG = f"SELECT {_FEATURE_TEXT_PG} AS feature {_VIEWPORT_FROM_PG}"
_VIEWPORT_ROWS_SQL_PG = f"SELECT a.*, u.username AS owner {_VIEWPORT_FROM_PG}"


def _no_jit(conn: Connection) -> None:
    """PostgreSQL: no JIT for the key-range queries. Its per-range row estimate (5,000) makes
    the plan look costly enough to compile: 13 ms of JIT and a 229 ms query, measured, for a
    16 ms nested loop. SET LOCAL ends with the connection's transaction."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SET LOCAL jit = off"))


def query_viewport(
    db: Database,
    p: Principal,
    slide: SlideRef,
    view: Viewport,
    *,
    layer: str | None = None,
    limit: int = 5000,
) -> str:
    """Annotations whose bbox meets the viewport, through the spatial index, as GeoJSON text;
    at most ``limit`` (``truncated`` says more exist: the viewer then asks for the density
    raster)."""
    pseudo = _check(p, Action.ANNOTATION_READ, slide, -1)
    x0, y0, x1, y1 = view.x, view.y, view.x + view.width, view.y + view.height
    params: dict[str, Any] = {
        "x0": x0,
        "y0": y0,
        "x1": x1,
        "y1": y1,
        "slide": slide.slide_id,
        "n": limit + 1,
    }
    layer_sql = ""
    if layer is not None:
        layer_sql = " AND a.layer = :layer"
        params["layer"] = layer
    params["ranges"] = _dumps(viewport_ranges(x0, y0, x1, y1))
    if db.dialect == "postgresql":
        sql = _VIEWPORT_ROWS_SQL_PG if pseudo else VIEWPORT_SQL_PG
    else:
        sql = _VIEWPORT_ROWS_SQL_SQLITE if pseudo else VIEWPORT_SQL_SQLITE
    with db.engine.connect() as conn:
        _no_jit(conn)
        rows = conn.execute(text(sql + layer_sql + " LIMIT :n"), params).all()
    truncated = len(rows) > limit
    if pseudo:
        features = [_feature(r, r.owner, pseudonymised=True, export=False) for r in rows[:limit]]
        return _dumps({"type": "FeatureCollection", "features": features, "truncated": truncated})
    # Stored geometry and properties are JSON text already: splice them instead of parsing
    # and re-encoding (the viewport answer is the hot path of a pan at 10^6 annotations).
    parts = [r.feature for r in rows[:limit]]
    return (
        '{"type":"FeatureCollection","features":['
        + ",".join(parts)
        + '],"truncated":'
        + ("true" if truncated else "false")
        + "}"
    )


def _feature_text(r: Any) -> str:
    props = r.properties
    head = '{"objectType":' + _dumps(r.object_type)
    props = head + "}" if props == "{}" else head + "," + props[1:]
    iain = _dumps(
        {
            "id": r.id,
            "kind": r.kind,
            "layer": r.layer,
            "owner": r.owner,
            "class": r.class_name,
            "comment": r.comment,
            "version": r.version,
        }
    )
    fid = ',"id":' + _dumps(r.uuid) if r.uuid else ""
    geometry: str = r.geometry
    return (
        '{"type":"Feature"'
        + fid
        + ',"geometry":'
        + geometry
        + ',"properties":'
        + props
        + ',"iain":'
        + iain
        + "}"
    )


def density(
    db: Database,
    p: Principal,
    slide: SlideRef,
    view: Viewport,
    *,
    cols: int,
    rows: int,
    layer: str | None = None,
) -> list[list[int]]:
    """Annotation counts on a ``rows`` x ``cols`` grid over the viewport (bbox centres): what
    the viewer draws at low zoom instead of 10^5+ shapes. ``result[row][col]``."""
    _check(p, Action.ANNOTATION_READ, slide, -1)
    x0, y0, x1, y1 = view.x, view.y, view.x + view.width, view.y + view.height
    params: dict[str, Any] = {
        "x0": x0,
        "y0": y0,
        "x1": x1,
        "y1": y1,
        "slide": slide.slide_id,
        "sx": cols / view.width,
        "sy": rows / view.height,
    }
    layer_sql = " AND a.layer = :layer" if layer is not None else ""
    if layer is not None:
        params["layer"] = layer
    cell = (
        "CAST(FLOOR(((a.min_x + a.max_x) / 2 - :x0) * :sx) AS INTEGER) AS cx, "
        "CAST(FLOOR(((a.min_y + a.max_y) / 2 - :y0) * :sy) AS INTEGER) AS cy, COUNT(*) AS n"
    )
    params["ranges"] = _dumps(viewport_ranges(x0, y0, x1, y1))
    if db.dialect == "postgresql":
        where = (
            _RANGES_PG + "WHERE a.min_x <= :x1 AND a.max_x >= :x0 "
            "AND a.min_y <= :y1 AND a.max_y >= :y0"
        )
    else:
        where = (
            "FROM json_each(:ranges) g CROSS JOIN annotations a "
            "WHERE a.cell BETWEEN g.value ->> 0 AND g.value ->> 1 "
            "AND a.min_x <= :x1 AND a.max_x >= :x0 AND a.min_y <= :y1 AND a.max_y >= :y0"
        )
    sql = (
        f"SELECT {cell} {where} AND a.slide_id = :slide AND NOT a.deleted{layer_sql} "
        "GROUP BY cx, cy"
    )
    grid = [[0] * cols for _ in range(rows)]
    with db.engine.connect() as conn:
        _no_jit(conn)
        for cx, cy, n in conn.execute(text(sql), params):
            # Shapes straddling the edge have their centre outside: count them at the edge.
            grid[min(max(cy, 0), rows - 1)][min(max(cx, 0), cols - 1)] += n
    return grid


def _split_properties(props: dict[str, Any], where: str) -> FastFields:
    """QuPath's ``objectType`` and ``classification`` and our ``iain`` block; the rest of the
    properties is kept verbatim."""
    props = dict(props)
    object_type = props.pop("objectType", "annotation")
    iain = props.pop("iain", None) or {}
    cls = props.get("classification")
    class_name = color = None
    if cls is not None:
        if not isinstance(cls, dict) or not isinstance(cls.get("name"), str):
            raise InvalidInputError(f"{where}: classification needs a name")
        class_name = cls["name"]
        color = _hex(cls["color"], where) if "color" in cls else None
    kind = None
    if not isinstance(iain, dict):
        raise InvalidInputError(f"{where}: properties.iain must be an object")
    if "kind" in iain:
        try:
            kind = Kind(iain["kind"])
        except ValueError:
            raise InvalidInputError(f"{where}: unknown kind {iain['kind']!r:.40}") from None
    comment = iain.get("comment", "")
    if not isinstance(comment, str) or not isinstance(object_type, str):
        raise InvalidInputError(f"{where}: comment and objectType must be strings")
    return FastFields(kind, object_type, class_name, color, comment, props)


def _parse_feature(feature: Any, i: int) -> AnnotationInput:
    where = f"feature {i}"
    if not isinstance(feature, dict) or feature.get("type") != "Feature":
        raise InvalidInputError(f"{where}: not a GeoJSON Feature")
    fid = feature.get("id", "")
    if not isinstance(fid, str | int) or isinstance(fid, bool):
        raise InvalidInputError(f"{where}: id must be a string")
    where = f"feature {i}" + (f" (id {fid})" if fid != "" else "")
    props = feature.get("properties") or {}
    if not isinstance(props, dict):
        raise InvalidInputError(f"{where}: properties must be an object")
    f = _split_properties(props, where)
    return AnnotationInput(
        geometry=feature.get("geometry"),
        kind=f.kind,
        class_name=f.class_name,
        color=f.color,
        comment=f.comment,
        object_type=f.object_type,
        properties=f.properties,
        uuid=str(fid),
    )


def _import_row(feature: Any, i: int, limits: Limits) -> tuple[ImportRow, str | None, str | None]:
    """The per-feature validator: the import's definition of a good feature."""
    item = _parse_feature(feature, i)
    r = _prepare(item, f"feature {i}" + (f" (id {item.uuid:.64})" if item.uuid else ""), limits)
    b = r.bbox
    row = (
        r.uuid,
        r.kind.value,
        r.object_type,
        r.class_name,
        r.comment,
        r.geometry,
        r.properties,
        b.min_x,
        b.min_y,
        b.max_x,
        b.max_y,
        cell_key(b.min_x, b.min_y, b.max_x, b.max_y),
    )
    return row, item.class_name, item.color


def _fast_fields(props: dict[str, Any], limits: Limits) -> FastFields | None:
    """``_split_properties`` plus ``_prepare``'s checks; None where either would complain
    (the per-feature path then words it)."""
    try:
        f = _split_properties(props, "")
    except InvalidInputError:
        return None
    if (
        f.object_type not in OBJECT_TYPES
        or len(f.comment) > limits.max_comment
        or (f.class_name is not None and not 0 < len(f.class_name) <= 100)
    ):
        return None
    return f


def import_geojson(
    db: Database,
    p: Principal,
    slide: SlideRef,
    body: bytes | Any,
    *,
    layer: str = "default",
    limits: Limits = Limits(),
    batch: int = 20_000,
) -> int:
    """Import a QuPath GeoJSON FeatureCollection (or a Feature, or a bare list of features)
    into ``layer``, all or nothing: the first invalid feature aborts with an error naming it.
    ``body`` is the JSON text (the fast path) or an already parsed collection."""
    _check(p, Action.ANNOTATION_WRITE, slide, None)
    if not 0 < len(layer) <= 100:
        raise InvalidInputError("layer name must be 1-100 characters")
    features = parse_body(body) if isinstance(body, bytes | bytearray) else features_of(body)
    if len(features) > limits.max_features:
        raise InvalidInputError(f"{len(features)} features: at most {limits.max_features}")
    classes: dict[str, str] = {}
    cache: dict[bytes, Any] = {}
    tail = (layer, slide.slide_id, p.user_id, 1, False, now_utc())

    def batches() -> Iterator[list[ImportRow]]:
        for start in range(0, len(features), batch):
            rows = prepare_batch(
                features[start : start + batch],
                start,
                split=lambda props: _fast_fields(props, limits),
                slow_row=lambda feature, i: _import_row(feature, i, limits),
                max_vertices=limits.max_vertices,
                classes=classes,
                default_color=DEFAULT_COLOR,
                cache=cache,
                tail=tail,
            )
            yield rows

    columns = (*ROW_COLUMNS, "layer", "slide_id", "owner_id", "version", "deleted", "updated_at")
    with paused_gc():
        stats = write_rows(db, columns, batches(), lambda conn: _ensure_classes(conn, classes))
    with db.session() as s:
        _audit(s, p, slide, "import", {"layer": layer, "features": len(features)})
    logger.info(
        "imported %d annotations (prepare %.1f CPU-s, write %.1f CPU-s)",
        len(features),
        stats.prepare_cpu_s,
        stats.write_cpu_s,
    )
    return len(features)


# Stored text that _feature's parse and re-encode might spell differently or reorder: an
# exponent, a fraction ending in 0 past its first digit, 7+ fraction digits (17 significant
# digits need them: geometry is bounded by MAX_COORD), tiny numbers, -0, escapes; objectType
# or iain inside the properties. Those rows take _feature; the rest is spliced as stored.
# (Split so that each regex starts with a literal: one alternation measured 7 us a row.)
_FRACTION = re.compile(r"\.(?:[0-9]{7}|[0-9]*[0-9]0(?![0-9]))")
_EXPONENT = re.compile(r"[eE][-+0-9]")
_MINUS_ZERO = re.compile(r"-0(?![.0-9])")
_ANY_NUMBER = re.compile(r"[0-9][eE]|\.[0-9]*[0-9]0(?![0-9])|[0-9]{16,}|-0(?![.0-9])")
_GEOMETRY_KIND = {
    f'{{"type":"{t}"': infer_kind(t).value
    for t in ("Point", "MultiPoint", "LineString", "Polygon", "MultiPolygon")
}
_EXPORT_COLUMNS = ("id", "uuid", "kind", "object_type", "comment", "geometry", "properties")


def _respelt_geometry(g: str) -> bool:
    return (
        "\\" in g
        or "0.0000" in g
        or _FRACTION.search(g) is not None
        or _EXPONENT.search(g) is not None
        or ("-0" in g and _MINUS_ZERO.search(g) is not None)
    )


def _respelt_properties(props: str) -> bool:
    """Properties repeat (a detector writes a handful of objects 10^6 times): cached."""
    return (
        "\\" in props
        or "0.0000" in props
        or '"objectType"' in props
        or '"iain"' in props
        or _ANY_NUMBER.search(props) is not None
    )


def _export_text(r: Any, respelt: dict[str, bool]) -> str:
    """``_dumps(_feature(r, export=True))`` without parsing the stored JSON: the same bytes
    (tests/share/test_annotation_export.py compares them), ~10x cheaper at 10^6 rows."""
    geometry: str = r.geometry
    props: str = r.properties
    inferred = _GEOMETRY_KIND.get(geometry[: geometry.find('"', 9) + 1])
    bad = respelt.get(props)
    if bad is None:
        bad = respelt[props] = _respelt_properties(props)
        if len(respelt) > 10_000:
            respelt.clear()
    if inferred is None or bad or _respelt_geometry(geometry):
        return _dumps(_feature(r, "", pseudonymised=False, export=True))
    iain: dict[str, str] = {}
    if r.kind != inferred:
        iain["kind"] = r.kind
    if r.comment:
        iain["comment"] = r.comment
    text = (
        '{"type":"Feature","geometry":'
        + geometry
        + ',"properties":{"objectType":'
        + _dumps(r.object_type)
        + ("" if props == "{}" else "," + props[1:-1])
        + (',"iain":' + _dumps(iain) if iain else "")
        + "}"
    )
    return text + (',"id":' + _dumps(r.uuid) + "}" if r.uuid else "}")


def export_geojson(
    db: Database, p: Principal, slide: SlideRef, *, layer: str | None = None, batch: int = 5000
) -> Iterator[str]:
    """QuPath GeoJSON FeatureCollection of the slide's annotations, as text chunks (one per
    ``batch`` rows, streamed from the database: no ORM objects, no JSON parsing)."""
    pseudo = _check(p, Action.ANNOTATION_READ, slide, -1)
    table = Annotation.__table__
    q = select(*(table.c[c] for c in _EXPORT_COLUMNS)).where(
        table.c.slide_id == slide.slide_id, table.c.deleted.is_(False)
    )
    if layer is not None:
        q = q.where(table.c.layer == layer)
    yield '{"type":"FeatureCollection","features":['
    sep = ""
    respelt: dict[str, bool] = {}
    with db.engine.connect() as conn:
        result = conn.execution_options(yield_per=batch).execute(q.order_by(table.c.id))
        for rows in result.partitions():
            if pseudo:
                parts = [_dumps(_feature(r, "", pseudonymised=True, export=True)) for r in rows]
            else:
                parts = [_export_text(r, respelt) for r in rows]
            yield sep + ",".join(parts)
            sep = ","
    yield "]}"


def purge_slide(db: Database, slide_id: str) -> None:
    """Drop every annotation of a slide (tests, slide removal)."""
    with db.session() as s:
        s.execute(delete(Annotation).where(Annotation.slide_id == slide_id))

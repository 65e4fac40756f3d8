"""Validation of annotation geometries (GeoJSON, level-0 pixel coordinates, x right, y down).

Checks what a viewer and a spatial index need: the GeoJSON type matches the annotation kind,
every position is two finite numbers within ``MAX_COORD``, rings are closed with at least 4
positions, a feature has at most ``max_vertices`` positions, and a (multi)polygon is valid in
the OGC sense (GEOS: no self-intersection such as a bow-tie, holes inside their shell), since
areas, containment and the density of invalid shapes mean nothing. Errors name the feature
(``where``) and the failing part. ``share.annotation_import`` does the same checks as arrays
for the polygons of a 10^6-feature import and falls back to this validator for the wording.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, cast

import shapely

from share.errors import InvalidInputError

__all__ = ["MAX_COORD", "Bbox", "Kind", "infer_kind", "polygon_problem", "validate_geometry"]

MAX_COORD = 1e8  # level-0 pixels: 100x the largest slide; anything beyond is a bug or an attack


class Kind(StrEnum):
    POINT = "point"
    LINE = "line"
    RECTANGLE = "rectangle"
    ELLIPSE = "ellipse"
    POLYGON = "polygon"
    FREEHAND = "freehand"


_TYPES: dict[Kind, frozenset[str]] = {
    Kind.POINT: frozenset({"Point", "MultiPoint"}),
    Kind.LINE: frozenset({"LineString"}),
    Kind.RECTANGLE: frozenset({"Polygon"}),
    Kind.ELLIPSE: frozenset({"Polygon"}),
    Kind.POLYGON: frozenset({"Polygon", "MultiPolygon"}),
    Kind.FREEHAND: frozenset({"Polygon", "MultiPolygon", "LineString"}),
}
_INFERRED = {
    "Point": Kind.POINT,
    "MultiPoint": Kind.POINT,
    "LineString": Kind.LINE,
    "Polygon": Kind.POLYGON,
    "MultiPolygon": Kind.POLYGON,
}


@dataclass(frozen=True)
class Bbox:
    min_x: float
    min_y: float
    max_x: float
    max_y: float


def infer_kind(geometry_type: str) -> Kind:
    """The kind a GeoJSON type maps to when the source (e.g. QuPath) does not say."""
    return _INFERRED[geometry_type]


class _Walker:
    def __init__(self, where: str, max_vertices: int) -> None:
        self.where = where
        self.max_vertices = max_vertices
        self.count = 0
        self.min_x = self.min_y = math.inf
        self.max_x = self.max_y = -math.inf

    def fail(self, what: str) -> InvalidInputError:
        return InvalidInputError(f"{self.where}: {what}")

    def positions(self, value: Any, what: str, min_len: int) -> list[list[float]]:
        if not isinstance(value, list) or len(value) < min_len:
            raise self.fail(f"{what} needs a list of at least {min_len} positions")
        self.count += len(value)
        if self.count > self.max_vertices:
            raise self.fail(f"more than {self.max_vertices} vertices")
        # Whole-list builtins (set/map/sum/min) instead of a per-vertex Python loop: an import
        # of 10^6 polygons spends most of its time here.
        if not set(map(type, value)) <= {list} or set(map(len, value)) != {2}:
            bad = next(p for p in value if type(p) is not list or len(p) != 2)
            raise self.fail(f"{what}: position {bad!r:.40} is not [x, y]")
        xs = [p[0] for p in value]
        ys = [p[1] for p in value]
        # type() excludes bool; NaN/inf propagate through sum (json.loads accepts NaN/Infinity).
        if not set(map(type, xs)) | set(map(type, ys)) <= {int, float} or not math.isfinite(
            sum(xs) + sum(ys)
        ):
            bad_v = next(
                v for v in (*xs, *ys) if type(v) not in (int, float) or not math.isfinite(v)
            )
            raise self.fail(f"{what}: coordinate {bad_v!r:.40} is not a finite number")
        lo_x, hi_x, lo_y, hi_y = min(xs), max(xs), min(ys), max(ys)
        if min(lo_x, lo_y) < -MAX_COORD or max(hi_x, hi_y) > MAX_COORD:
            raise self.fail(f"{what}: coordinate beyond {MAX_COORD:g}")
        self.min_x, self.max_x = min(self.min_x, lo_x), max(self.max_x, hi_x)
        self.min_y, self.max_y = min(self.min_y, lo_y), max(self.max_y, hi_y)
        return value

    def ring(self, value: Any, what: str) -> None:
        ring = self.positions(value, what, 4)
        if ring[0] != ring[-1]:
            raise self.fail(f"{what} is not closed (first and last positions differ)")

    def polygon(self, value: Any, what: str) -> None:
        if not isinstance(value, list) or not value:
            raise self.fail(f"{what} needs at least one ring")
        for i, ring in enumerate(value):
            self.ring(ring, f"{what} ring {i}")


def polygon_problem(polygons: Sequence[Sequence[Any]]) -> str | None:
    """Why the polygons (each a list of closed rings, shell first) are not a valid
    (multi)polygon -- GEOS's reason, e.g. ``Self-intersection[0.5 0.5]`` -- or None."""
    geometry = shapely.MultiPolygon([shapely.Polygon(p[0], p[1:]) for p in polygons])
    if len(polygons) == 1:
        geometry = geometry.geoms[0]
    if shapely.is_valid(geometry):
        return None
    return str(shapely.is_valid_reason(geometry))


def validate_geometry(
    geometry: Any, kind: Kind | None, *, where: str, max_vertices: int
) -> tuple[Kind, Bbox]:
    """Check ``geometry`` for ``kind`` (inferred when None); return the kind and bounding box."""
    w = _Walker(where, max_vertices)
    if not isinstance(geometry, dict):
        raise w.fail("geometry must be a GeoJSON object")
    gtype = geometry.get("type")
    coords = geometry.get("coordinates")
    if gtype not in _INFERRED:
        raise w.fail(f"geometry type {gtype!r:.40} not in {', '.join(_INFERRED)}")
    kind = kind or infer_kind(gtype)
    if gtype not in _TYPES[kind]:
        raise w.fail(f"a {kind.value} cannot be a {gtype}")
    if gtype == "Point":
        w.positions([coords], "point", 1)
    elif gtype == "MultiPoint":
        w.positions(coords, "multipoint", 1)
    elif gtype == "LineString":
        w.positions(coords, "line", 2)
    elif gtype == "Polygon":
        w.polygon(coords, "polygon")
        if kind is Kind.RECTANGLE and isinstance(coords, list):
            ring = coords[0]
            xs = {p[0] for p in ring}
            ys = {p[1] for p in ring}
            if len(ring) != 5 or len(xs) != 2 or len(ys) != 2 or len(coords) != 1:
                raise w.fail("a rectangle is one closed ring of 4 axis-aligned corners")
        if problem := polygon_problem([cast(list[Any], coords)]):
            raise w.fail(f"polygon is not valid: {problem}")
    else:
        if not isinstance(coords, list) or not coords:
            raise w.fail("multipolygon needs at least one polygon")
        for i, poly in enumerate(coords):
            w.polygon(poly, f"polygon {i}")
        if problem := polygon_problem(coords):
            raise w.fail(f"multipolygon is not valid: {problem}")
    return kind, Bbox(w.min_x, w.min_y, w.max_x, w.max_y)

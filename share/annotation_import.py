"""QuPath GeoJSON import at 10^6 features: parse and validate in batches, as arrays.

Why this shape: ``json.loads`` of a 10^6-feature body builds ~3 GB of Python objects, and a
per-vertex Python validator cost more than the whole 20 s budget. Here msgspec splits the body
into raw feature slices (the body stays the one large object), each batch is decoded into
typed structs, and polygons are checked as arrays: numpy for ring closure, vertex counts,
bounds and finiteness, shapely (GEOS) for validity. The caller writes each batch's rows.

A feature the fast path does not take as it is -- another geometry type, a declared
rectangle, a shape the typed structs refuse, any failed check -- goes through the
per-feature validator of ``share.annotations`` (``slow_row``): that validator stays the
definition of what is accepted, and it words the error naming the feature. The first failing
feature of the body is the one named, as with a plain loop.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import msgspec
import numpy as np
import shapely

from share.errors import InvalidInputError
from share.geometry import MAX_COORD, Kind
from share.spatial import cell_keys

__all__ = [
    "ROW_COLUMNS",
    "FastFields",
    "ImportRow",
    "features_of",
    "parse_body",
    "paused_gc",
    "prepare_batch",
]

ImportRow = tuple[Any, ...]
ROW_COLUMNS = (
    "uuid",
    "kind",
    "object_type",
    "class_name",
    "comment",
    "geometry",
    "properties",
    "min_x",
    "min_y",
    "max_x",
    "max_y",
    "cell",
)
"""The per-feature columns of an ``ImportRow``, in order."""


class _Collection(msgspec.Struct, gc=False):
    type: str = ""
    features: list[msgspec.Raw] | None = None


_NULL = msgspec.Raw(b"null")


class _Feature(msgspec.Struct, gc=False):
    type: str
    geometry: msgspec.Raw
    properties: msgspec.Raw = _NULL
    id: str | int = ""


class _Polygon(msgspec.Struct, tag="Polygon", tag_field="type", gc=False):
    coordinates: list[list[tuple[float, float]]]


_TOP = msgspec.json.Decoder(_Collection | list[msgspec.Raw])
_FEATURE = msgspec.json.Decoder(_Feature)
_POLYGON = msgspec.json.Decoder(_Polygon)
_ANY = msgspec.json.Decoder()
_ENCODER = msgspec.json.Encoder()
_FAST_KINDS = (Kind.POLYGON, Kind.FREEHAND, Kind.ELLIPSE)  # no rule beyond a valid polygon


def parse_body(body: bytes | bytearray) -> Sequence[Any]:
    """The features of a FeatureCollection, a Feature or a bare list, as raw JSON slices of
    ``body`` (views, not copies) --
    or, for a body the fast parser refuses (NaN, which Python's parser reads and the validator
    must then name; odd shapes), as Python objects for the per-feature path."""
    try:
        top: _Collection | list[msgspec.Raw] = _TOP.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        try:
            collection = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise InvalidInputError(f"body is not JSON: {exc}") from None
        return features_of(collection)
    if isinstance(top, list):
        return top
    if top.type == "Feature":
        return [msgspec.Raw(bytes(body))]
    if top.type == "FeatureCollection" and top.features is not None:
        return top.features
    raise InvalidInputError("expected a GeoJSON FeatureCollection or a list of features")


def features_of(collection: Any) -> list[Any]:
    """The feature list of an already parsed collection (same shapes as ``parse_body``)."""
    if isinstance(collection, dict) and collection.get("type") == "FeatureCollection":
        features = collection.get("features")
    elif isinstance(collection, dict) and collection.get("type") == "Feature":
        features = [collection]
    else:
        features = collection
    if not isinstance(features, list):
        raise InvalidInputError("expected a GeoJSON FeatureCollection or a list of features")
    return features


@dataclass(frozen=True)
class FastFields:
    """What ``split`` reads from a feature's properties; ``None`` sends it to ``slow_row``."""

    kind: Kind | None
    object_type: str
    class_name: str | None
    color: str | None
    comment: str
    properties: dict[str, Any]  # the rest, stored verbatim


Split = Callable[[dict[str, Any]], FastFields | None]
SlowRow = Callable[[Any, int], tuple[ImportRow, str | None, str | None]]


class _Slow(Exception):
    """This feature needs the per-feature path."""


@dataclass
class _Batch:
    rows: list[ImportRow | None] = field(default_factory=list)
    index: list[int] = field(default_factory=list)  # positions of the polygons below
    rings: list[list[list[tuple[float, float]]]] = field(default_factory=list)
    head: list[tuple[str, str, str, str | None, str, str, str]] = field(default_factory=list)


_Props = tuple[FastFields, str]
_CACHE_MAX = 1 << 16


def _properties(raw: msgspec.Raw, split: Split, cache: dict[bytes, _Props | None]) -> _Props:
    """``split`` of the properties and the rest as compact JSON text, cached by the raw text:
    a detector's output repeats a handful of property objects 10^6 times."""
    key = bytes(raw)
    try:
        known = cache[key]
    except KeyError:
        props = _ANY.decode(key)
        fields = (
            split(props if props is not None else {}) if isinstance(props, dict | None) else None
        )
        known = None if fields is None else (fields, _ENCODER.encode(fields.properties).decode())
        if len(cache) >= _CACHE_MAX:
            cache.clear()
        cache[key] = known
    if known is None:
        raise _Slow
    return known


def _fast(item: Any, split: Split, cache: dict[bytes, _Props | None]) -> tuple[Any, ...]:
    if not isinstance(item, msgspec.Raw):
        raise _Slow
    feature = _FEATURE.decode(item)
    uuid = str(feature.id)
    if feature.type != "Feature" or len(uuid) > 64:
        raise _Slow
    fields, properties = _properties(feature.properties, split, cache)
    if fields.kind is not None and fields.kind not in _FAST_KINDS:
        raise _Slow
    polygon = _POLYGON.decode(feature.geometry)
    if not polygon.coordinates or min(map(len, polygon.coordinates)) < 4:
        raise _Slow  # (the array checks below need every ring to have its 4 positions)
    head = (
        uuid,
        (fields.kind or Kind.POLYGON).value,
        fields.object_type,
        fields.class_name,
        fields.comment,
        # the sender's geometry text minus whitespace: numbers keep their spelling
        msgspec.json.format(feature.geometry, indent=-1).decode(),
        properties,
    )
    return head, polygon.coordinates, fields.class_name, fields.color


def prepare_batch(
    items: Sequence[Any],
    start: int,
    *,
    split: Split,
    slow_row: SlowRow,
    max_vertices: int,
    classes: dict[str, str],
    default_color: str,
    cache: dict[bytes, Any],
    tail: tuple[Any, ...] = (),
) -> list[ImportRow]:
    """Rows of ``items`` (raw slices or parsed objects; feature numbers count from ``start``),
    each ending with ``tail`` (the columns common to the import).
    Raises InvalidInputError naming the first failing feature; first-seen class colours go
    into ``classes``. ``cache`` is the import's memo of property objects."""
    batch = _Batch()
    failure: InvalidInputError | None = None
    for j, item in enumerate(items):
        try:
            head, rings, class_name, color = _fast(item, split, cache)
        except (_Slow, msgspec.DecodeError, msgspec.ValidationError, RecursionError):
            try:
                row, class_name, color = _slow(item, start + j, slow_row)
            except InvalidInputError as exc:
                failure = exc  # polygons before it may still fail first: checked below
                break
            batch.rows.append(row + tail)
        else:
            batch.index.append(j)
            batch.rings.append(rings)
            batch.head.append(head)
            batch.rows.append(None)
        if class_name is not None and class_name not in classes:
            classes[class_name] = color or default_color
    for j in _check_polygons(batch, max_vertices, tail):
        # The per-feature validator words the error (and is the judge: should it accept
        # what the array checks refused, its row is taken).
        batch.rows[j] = _slow(items[j], start + j, slow_row)[0] + tail
    if failure is not None:
        raise failure
    return batch.rows  # type: ignore[return-value]  # every None was filled


@contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic GC during an import: its passes over the batches' live containers (and the
    rest of the process's heap) cost ~30 % of the import's CPU, measured; an import makes no
    reference cycles, so refcounting frees everything as it goes."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _slow(item: Any, i: int, slow_row: SlowRow) -> tuple[ImportRow, str | None, str | None]:
    try:
        if isinstance(item, msgspec.Raw):
            try:
                item = _ANY.decode(item)
            except msgspec.DecodeError:  # e.g. an integer beyond 64 bits: Python's parser
                item = json.loads(bytes(item))
        return slow_row(item, i)
    except RecursionError:  # decoding, or encoding the properties back
        raise InvalidInputError(f"feature {i}: nested too deeply") from None


def _check_polygons(batch: _Batch, max_vertices: int, tail: tuple[Any, ...]) -> list[int]:
    """Fill the rows of the batch's polygons that pass; return the positions of the others."""
    if not batch.index:
        return []
    ring_len = np.fromiter(map(len, chain.from_iterable(batch.rings)), np.int64)
    rings_per = np.fromiter(map(len, batch.rings), np.int64, len(batch.rings))
    positions = chain.from_iterable(chain.from_iterable(batch.rings))
    xy = np.fromiter(chain.from_iterable(positions), np.float64).reshape(-1, 2)
    ring_end = np.cumsum(ring_len)
    ring_start = ring_end - ring_len
    geom_ring_end = np.cumsum(rings_per)
    vertex_end = ring_end[geom_ring_end - 1]
    vertex_start = np.concatenate([[0], vertex_end[:-1]])
    ring_ok = np.all(xy[ring_start] == xy[ring_end - 1], axis=1)
    vertex_ok = np.all(np.isfinite(xy) & (np.abs(xy) <= MAX_COORD), axis=1)
    ok = np.logical_and.reduceat(ring_ok, geom_ring_end - rings_per)
    ok &= np.logical_and.reduceat(vertex_ok, vertex_start)
    ok &= vertex_end - vertex_start <= max_vertices
    good = np.flatnonzero(ok)
    if len(good) < len(ok):  # GEOS must not see unclosed or non-finite rings
        keep_ring = np.repeat(ok, rings_per)
        keep_vertex = np.repeat(keep_ring, ring_len)
        xy_ok = xy[keep_vertex]
        ring_len_ok = ring_len[keep_ring]
        rings_per_ok = rings_per[ok]
    else:
        xy_ok, ring_len_ok, rings_per_ok = xy, ring_len, rings_per
    polygons = shapely.from_ragged_array(
        shapely.GeometryType.POLYGON,
        xy_ok,
        (
            np.concatenate([[0], np.cumsum(ring_len_ok)]),
            np.concatenate([[0], np.cumsum(rings_per_ok)]),
        ),
    )
    valid = shapely.is_valid(polygons)
    ok[good[~valid]] = False
    good = good[valid]
    lo_x = np.minimum.reduceat(xy[:, 0], vertex_start)[good]
    lo_y = np.minimum.reduceat(xy[:, 1], vertex_start)[good]
    hi_x = np.maximum.reduceat(xy[:, 0], vertex_start)[good]
    hi_y = np.maximum.reduceat(xy[:, 1], vertex_start)[good]
    keys = cell_keys(lo_x, lo_y, hi_x, hi_y)
    columns = (lo_x.tolist(), lo_y.tolist(), hi_x.tolist(), hi_y.tolist(), keys.tolist())
    bbox = zip(*columns, strict=True)
    for g, box in zip(good.tolist(), bbox, strict=True):
        batch.rows[batch.index[g]] = (*batch.head[g], *box, *tail)
    return [batch.index[g] for g in np.flatnonzero(~ok).tolist()]

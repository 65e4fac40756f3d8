"""Label overlays: the NGFF label pyramid inference writes (``labels/<name>/``) as RGBA tiles.

The label arrays have the image levels' sizes and chunking (``inference/_output.py``), so the
overlay's DeepZoom geometry is the slide's own: same tile size, same level numbering, and
OpenSeadragon lays one over the other exactly. A tile is the stored uint8 mask chunk mapped
through the model card's class colours (``image-label.colors``; background alpha 0), encoded
as PNG once and kept in the tile cache. Cache keys and ETags hash the slide id with the label
run's fingerprint, and the descriptor URL carries it (``?v=``, which OpenSeadragon appends to
every tile URL), so a re-run with other parameters never meets a stale cached tile.
Only finished runs (``status: complete``) are offered or served. Local stores only for now.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import zarr
from PIL import Image

from tiling.catalog import SlideRef
from tiling.errors import (
    CorruptPyramidError,
    PyramidNotFoundError,
    TileOutOfRangeError,
    UnsupportedTileRequestError,
)
from tiling.layout import LABELS_GROUP
from tiling.tiles import Tile, TileService, etag_for

__all__ = [
    "DEFAULT_OPACITY",
    "LabelLayer",
    "label_dzi",
    "label_layer",
    "label_names",
    "label_outlines",
    "label_tile",
    "overlay_entries",
]

DEFAULT_OPACITY = 0.5
PENDING = "pending validation"
NAME_PATTERN = r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$"


@dataclass(frozen=True, slots=True)
class LabelLayer:
    """One finished label run of a slide: colours (RGBA per label value) and provenance."""

    name: str
    colors: npt.NDArray[np.uint8]  # (256, 4) lookup table, label value -> RGBA
    classes: tuple[str, ...]
    model_version: str | None
    complete: bool
    validation: str  # the store's own flag: "pending" until a review says otherwise
    version_key: str  # hash of the run's fingerprint: part of cache keys and ETags


def _doc(ref: SlideRef, key: str) -> dict[str, Any] | None:
    raw = ref.store.get(key)
    if raw is None:
        return None
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptPyramidError(f"{key} is not JSON") from exc
    return doc if isinstance(doc, dict) else None


def label_names(ref: SlideRef) -> list[str]:
    """Names listed in ``labels/zarr.json`` now (read fresh: a job may just have added one)."""
    doc = _doc(ref, f"{LABELS_GROUP}/zarr.json") or {}
    ome = (doc.get("attributes") or {}).get("ome") or {}
    names = ome.get("labels", []) if isinstance(ome, dict) else []
    return [n for n in names if isinstance(n, str)]


def label_layer(ref: SlideRef, name: str) -> LabelLayer:
    """The label layer ``name``; unknown names raise :class:`PyramidNotFoundError` (404)."""
    if name not in label_names(ref):
        raise PyramidNotFoundError(f"no label layer {name!r}")
    doc = _doc(ref, f"{LABELS_GROUP}/{name}/zarr.json")
    if doc is None:
        raise PyramidNotFoundError(f"no label layer {name!r}")
    attrs = doc.get("attributes") or {}
    ome = attrs.get("ome") or {}
    iain = attrs.get("iain") or {}
    lut = np.zeros((256, 4), np.uint8)
    try:
        for entry in ome.get("image-label", {}).get("colors", []):
            value = int(entry["label-value"])
            if 0 <= value < 256:
                lut[value] = [int(c) for c in entry["rgba"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptPyramidError(f"labels/{name}: bad image-label colours") from exc
    fingerprint = json.dumps(iain.get("fingerprint"), sort_keys=True)
    version = hashlib.blake2b(fingerprint.encode(), digest_size=8).hexdigest()
    return LabelLayer(
        name=name,
        colors=lut,
        classes=tuple(str(c) for c in iain.get("classes", [])),
        model_version=str(iain["model_version"]) if iain.get("model_version") else None,
        complete=iain.get("status") == "complete",
        validation=str(iain.get("validation") or "pending"),
        version_key=version,
    )


def _mask_level(ref: SlideRef, name: str, level: int) -> zarr.Array[Any]:
    root = ref.store.local_root
    if root is None:
        raise UnsupportedTileRequestError("label overlays are served from local stores only")
    path = os.path.join(root, LABELS_GROUP, name, str(level))
    try:
        array = zarr.open_array(path, mode="r", zarr_format=3)
    except (FileNotFoundError, ValueError) as exc:  # zarr raises both for a missing array
        raise CorruptPyramidError(f"labels/{name}: level {level} missing") from exc
    return array


def _png(rgba: npt.NDArray[np.uint8]) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(out, format="PNG", compress_level=6)
    return out.getvalue()


def label_tile(
    tiles: TileService, ref: SlideRef, name: str, dz_level: int, col: int, row: int
) -> Tile:
    """DeepZoom tile (col, row) of the label overlay, RGBA PNG, cached by content key."""
    layer = label_layer(ref, name)
    if not layer.complete:
        raise PyramidNotFoundError(f"label layer {name!r} is still being written")
    level, width, height = tiles.dz_geometry(ref, dz_level)
    tw, th = ref.spec.tile_width, ref.spec.tile_height
    if level >= 0:
        tiles.check_tile(ref, level, col, row)
    elif (col, row) != (0, 0):
        raise TileOutOfRangeError(f"tile ({col}, {row}) not in level {dz_level}'s 1x1 grid")
    key = etag_for(ref.id, f"labels/{name}/{layer.version_key}/dz/{dz_level}/{col}/{row}")
    cached = tiles.cache.get(key)
    if cached is not None:
        return Tile(cached, key, "image/png")
    if level >= 0:
        info = ref.levels[level]
        x0, y0 = col * tw, row * th
        x1, y1 = min(info.width, x0 + tw), min(info.height, y0 + th)
        mask = np.asarray(_mask_level(ref, name, level)[y0:y1, x0:x1], dtype=np.uint8)
    else:  # below the stored pyramid: nearest-neighbour reduction of the coarsest level
        last = len(ref.levels) - 1
        full = np.asarray(_mask_level(ref, name, last)[:, :], dtype=np.uint8)
        ys = np.arange(height) * full.shape[0] // height
        xs = np.arange(width) * full.shape[1] // width
        mask = full[ys][:, xs]
    data = _png(layer.colors[mask])
    tiles.cache.put(key, data)
    return Tile(data, key, "image/png")


def label_dzi(tiles: TileService, ref: SlideRef, name: str) -> str:
    """The overlay's DeepZoom descriptor: the slide's own, in PNG."""
    label_layer(ref, name)
    return tiles.dzi(ref).replace('Format="jpeg"', 'Format="png"')


def label_outlines(ref: SlideRef, name: str) -> bytes:
    """The run's QuPath GeoJSON outlines (level-0 pixels) as stored."""
    label_layer(ref, name)
    data = ref.store.get(f"{LABELS_GROUP}/{name}.geojson")
    if data is None:
        raise PyramidNotFoundError(f"label layer {name!r} has no outlines")
    return data


def overlay_entries(ref: SlideRef, reviews: Any = None) -> list[dict[str, Any]]:
    """``overlays`` of the slide JSON: one per finished label layer, with its validation status.

    ``reviews(slide_id, name)`` (installed by the accounts package) returns the latest
    pathologist review as ``{"decision", "by", "at"}`` or None.
    """
    out: list[dict[str, Any]] = []
    for name in label_names(ref):
        try:
            layer = label_layer(ref, name)
        except (PyramidNotFoundError, CorruptPyramidError):
            continue
        if not layer.complete:
            continue
        review = reviews(ref.id, name) if reviews is not None else None
        status = PENDING
        if layer.validation == "accepted":
            status = "accepted"
        if review is not None:
            status = "accepted" if review.get("decision") == "accept" else "rejected"
        base = f"/slides/{ref.id}/labels/{name}"
        out.append(
            {
                "name": name,
                # OpenSeadragon appends the descriptor's query to every tile URL: a re-run
                # with other parameters gets new URLs, so ``immutable`` stays true
                "dzi_url": f"{base}.dzi?v={layer.version_key}",
                "outlines_url": f"/api/slides/{ref.id}/labels/{name}/outlines",
                # reviews need accounts (who reviewed): no route without them
                "review_url": f"/api/slides/{ref.id}/labels/{name}/review" if reviews else None,
                "opacity": DEFAULT_OPACITY,
                "ai_generated": True,
                "status": status,
                "review": review,
                "classes": list(layer.classes),
                "colors": [
                    [int(v) for v in layer.colors[i][:3]] for i in range(len(layer.classes))
                ],
                "model_version": layer.model_version,
            }
        )
    return out

"""The slide catalogue: every ``*.zarr`` pyramid under the data root, by opaque id.

A slide id is a hash of the source file's sha256 (``attributes["iain"]["source_sha256"]``
written by the converter) and of the level arrays' metadata, so it is the same in every
worker and on every machine that reads the same data, reveals no path, and changes when
the pyramid is rebuilt differently; that is what makes ``Cache-Control: immutable`` on
tile URLs safe. The catalogue is a cache of the store: it rescans after ``refresh_s``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tiling.errors import InvalidPyramidError, PyramidNotFoundError
from tiling.layout import IAIN_ATTR, JPEG_CODEC_NAME, LABELS_GROUP, PyramidSpec
from tiling.store import PyramidStore

__all__ = ["Catalog", "LevelInfo", "SlideRef", "load_slide"]

logger = logging.getLogger(__name__)

ROOT_KEY = "zarr.json"
SOURCE_SHA_KEYS = ("source_sha256", "sha256")


@dataclass(frozen=True, slots=True)
class LevelInfo:
    """One stored level: size in pixels and tile grid, (x, y) order."""

    width: int
    height: int
    columns: int
    rows: int


@dataclass(frozen=True, slots=True)
class SlideRef:
    """A published pyramid, as routes see it; ``store`` is never shown to clients."""

    id: str
    name: str
    spec: PyramidSpec
    levels: tuple[LevelInfo, ...]
    store: PyramidStore = field(repr=False, compare=False)
    vendor: str | None = None
    objective_power: float | None = None
    labels: tuple[str, ...] = ()

    @property
    def tile_size(self) -> int:
        return self.spec.tile_width

    def to_json(self) -> dict[str, Any]:
        """The public description served by ``/api/slides``."""
        mpp = (
            {"x": self.spec.mpp_x, "y": self.spec.mpp_y}
            if self.spec.mpp_x is not None and self.spec.mpp_y is not None
            else None
        )
        return {
            "id": self.id,
            "name": self.name,
            "width": self.spec.width,
            "height": self.spec.height,
            "mpp": mpp,
            "vendor": self.vendor,
            "objective_power": self.objective_power,
            "levels": len(self.levels),
            "level_dimensions": [[lv.width, lv.height] for lv in self.levels],
            "tile_size": self.spec.tile_width,
            "tile_width": self.spec.tile_width,
            "tile_height": self.spec.tile_height,
            "labels": list(self.labels),
            "dzi": f"/slides/{self.id}.dzi",
            "iiif": f"/iiif/3/{self.id}/info.json",
            "zarr": f"/zarr/{self.id}/",
            "thumbnail": f"/api/slides/{self.id}/thumbnail",
        }


def _json(store: PyramidStore, key: str) -> tuple[dict[str, Any], bytes]:
    raw = store.get(key)
    if raw is None:
        raise InvalidPyramidError(f"{key} missing")
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidPyramidError(f"{key} is not JSON") from exc
    if not isinstance(doc, dict):
        raise InvalidPyramidError(f"{key} is not a JSON object")
    return doc, raw


def _level_info(doc: Mapping[str, Any], key: str) -> tuple[LevelInfo, int, int]:
    try:
        shape = [int(v) for v in doc["shape"]]
        chunks = [int(v) for v in doc["chunk_grid"]["configuration"]["chunk_shape"]]
        codecs = [c["name"] for c in doc["codecs"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidPyramidError(f"{key}: not a zarr v3 array") from exc
    if doc.get("data_type") != "uint8" or len(shape) != 3 or shape[0] != 3 or chunks[0] != 3:
        raise InvalidPyramidError(f"{key}: expected uint8 (3, y, x), got {shape}")
    if JPEG_CODEC_NAME not in codecs:
        raise InvalidPyramidError(f"{key}: chunks are not {JPEG_CODEC_NAME}")
    _, height, width = shape
    _, tile_h, tile_w = chunks
    if min(height, width, tile_h, tile_w) < 1:
        raise InvalidPyramidError(f"{key}: empty shape {shape}")
    info = LevelInfo(width, height, -(-width // tile_w), -(-height // tile_h))
    return info, tile_w, tile_h


def _mpp(root: Mapping[str, Any], iain: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """Level-0 mpp: IAIN's own attribute first, else the NGFF scale of dataset 0."""
    mpp = iain.get("mpp")
    if isinstance(mpp, Mapping) and mpp.get("x") and mpp.get("y"):
        return float(mpp["x"]), float(mpp["y"])
    try:
        dataset = root["ome"]["multiscales"][0]["datasets"][0]
        scale = next(t for t in dataset["coordinateTransformations"] if t["type"] == "scale")
        axes = [a["name"] for a in root["ome"]["multiscales"][0]["axes"]]
        units = {a["name"]: a.get("unit") for a in root["ome"]["multiscales"][0]["axes"]}
        sx, sy = float(scale["scale"][axes.index("x")]), float(scale["scale"][axes.index("y")])
    except (KeyError, IndexError, TypeError, ValueError, StopIteration):
        return None, None
    if units.get("x") == "micrometer" and units.get("y") == "micrometer" and sx > 0 and sy > 0:
        return sx, sy
    return None, None


def _labels(store: PyramidStore) -> tuple[str, ...]:
    raw = store.get(f"{LABELS_GROUP}/{ROOT_KEY}")
    if raw is None:
        return ()
    try:
        names = json.loads(raw).get("attributes", {}).get("ome", {}).get("labels", [])
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return ()
    return tuple(str(n) for n in names if isinstance(n, str))


def load_slide(store: PyramidStore, name: str) -> SlideRef:
    """Read and check one pyramid's metadata (a few small JSON documents)."""
    root, _ = _json(store, ROOT_KEY)
    attributes = root.get("attributes") or {}
    iain = attributes.get(IAIN_ATTR) or {}
    try:
        datasets = [d["path"] for d in attributes["ome"]["multiscales"][0]["datasets"]]
    except (KeyError, IndexError, TypeError) as exc:
        raise InvalidPyramidError("zarr.json: no ome.multiscales datasets") from exc
    if datasets != [str(k) for k in range(len(datasets))] or not datasets:
        raise InvalidPyramidError(f"datasets must be 0..n, got {datasets[:5]}")
    digest = hashlib.sha256(b"iain-slide\0")
    source_sha = next((str(iain[k]) for k in SOURCE_SHA_KEYS if iain.get(k)), None)
    digest.update((source_sha or "").encode())
    if source_sha is None:  # no provenance: the root metadata stands for the content
        digest.update(_json(store, ROOT_KEY)[1])
    levels: list[LevelInfo] = []
    tile_sizes: set[tuple[int, int]] = set()
    for path in datasets:
        doc, raw = _json(store, f"{path}/{ROOT_KEY}")
        digest.update(raw)
        info, tile_w, tile_h = _level_info(doc, f"{path}/{ROOT_KEY}")
        levels.append(info)
        tile_sizes.add((tile_w, tile_h))
    if len(tile_sizes) != 1:
        raise InvalidPyramidError(f"levels use different chunk shapes {sorted(tile_sizes)}")
    ((tile_w, tile_h),) = tile_sizes
    mpp_x, mpp_y = _mpp(attributes, iain)
    spec = PyramidSpec(levels[0].width, levels[0].height, tile_w, tile_h, mpp_x, mpp_y)
    for k, info in enumerate(levels):
        if k < spec.level_count and spec.level_size(k) != (info.width, info.height):
            raise InvalidPyramidError(f"level {k} is {info.width}x{info.height}, not halved")
    objective = iain.get("objective_power")
    return SlideRef(
        id=digest.hexdigest()[:24],
        name=str(iain.get("name") or name.removesuffix(".zarr")),
        spec=spec,
        levels=tuple(levels),
        store=store,
        vendor=str(iain["vendor"]) if iain.get("vendor") else None,
        objective_power=float(objective) if isinstance(objective, int | float) else None,
        labels=_labels(store),
    )


class Catalog:
    """Slides under a data root, rescanned at most every ``refresh_s`` seconds."""

    def __init__(self, root: PyramidStore, refresh_s: float = 10.0) -> None:
        self._root = root
        self._refresh_s = refresh_s
        self._slides: dict[str, SlideRef] = {}
        self._by_name: dict[str, SlideRef] = {}
        self._scanned_at = -float("inf")
        self._lock = threading.Lock()

    def refresh(self) -> None:
        """Rescan the data root; pyramids that fail their checks are skipped with a warning."""
        slides: dict[str, SlideRef] = {}
        by_name: dict[str, SlideRef] = {}
        for name in self._root.list_pyramids():
            previous = self._by_name.get(name)
            try:
                ref = load_slide(self._root.child(name), name)
            except InvalidPyramidError as exc:
                logger.warning("skipping pyramid %s: %s", name, exc)
                continue
            if ref.id in slides:
                logger.warning("pyramid %s duplicates slide %s; skipped", name, ref.id)
                continue
            if previous is None or previous.id != ref.id:
                logger.info("slide %s published (%dx%d)", ref.id, ref.spec.width, ref.spec.height)
            slides[ref.id] = ref
            by_name[name] = ref
        self._slides, self._by_name = slides, by_name
        self._scanned_at = time.monotonic()

    def _refresh_if_older(self, seconds: float) -> None:
        if time.monotonic() - self._scanned_at >= seconds:
            with self._lock:
                if time.monotonic() - self._scanned_at >= seconds:
                    self.refresh()

    def slides(self) -> list[SlideRef]:
        self._refresh_if_older(self._refresh_s)
        return sorted(self._slides.values(), key=lambda ref: (ref.name, ref.id))

    def get(self, slide_id: str) -> SlideRef:
        """The slide with this id; unknown ids rescan (at most once a second) before failing."""
        ref = self._slides.get(slide_id)
        if ref is None:
            self._refresh_if_older(min(1.0, self._refresh_s))
            ref = self._slides.get(slide_id)
            if ref is None:
                raise PyramidNotFoundError("no such slide")
        return ref

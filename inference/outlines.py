"""Class outlines as QuPath GeoJSON: one Polygon annotation per connected region.

Contours are traced on one mask level small enough to hold in memory (at most
``MAX_TRACE_PIXELS``) with scikit-image's marching squares, then scaled to level-0 pixels, the
plane QuPath and the viewer use. Holes are kept as interior rings. :class:`RowTracer` gives the
same features band by band, while a run is still writing the mask (``_trace.py``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage
from skimage import measure

from inference.spec import ModelSpec

__all__ = ["MAX_TRACE_PIXELS", "RowTracer", "mask_to_features", "write_geojson"]

MAX_TRACE_PIXELS = 4096 * 4096


def _roll1(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """``np.roll(values, 1, axis=0)`` without its generic-axis overhead (a few thousand rings)."""
    return np.concatenate((values[-1:], values[:-1]))


def _ring_area(ring: npt.NDArray[np.float64]) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(abs(np.dot(x, _roll1(y)) - np.dot(y, _roll1(x))))


def _drop_collinear(points: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Keep only the corners of a marching-squares ring (exact, unlike a tolerance simplifier;
    and skimage's approximate_polygon would import scipy.signal, seconds on a busy machine)."""
    ring = points[:-1] if len(points) > 1 and np.array_equal(points[0], points[-1]) else points
    if len(ring) < 3:
        return points
    prev, nxt = _roll1(ring), np.concatenate((ring[1:], ring[:1]))
    cross = (ring[:, 0] - prev[:, 0]) * (nxt[:, 1] - ring[:, 1]) - (ring[:, 1] - prev[:, 1]) * (
        nxt[:, 0] - ring[:, 0]
    )
    corners = ring[np.abs(cross) > 1e-9]
    return np.concatenate([corners, corners[:1]]) if len(corners) else points


def mask_to_features(
    mask: npt.NDArray[np.uint8],
    spec: ModelSpec,
    downsample: float,
    mpp: float | None,
    min_pixels: int = 4,
) -> list[dict[str, Any]]:
    """Polygon features of every non-background class; ``downsample`` maps mask px to level 0."""
    features: list[dict[str, Any]] = []
    for value in range(1, len(spec.classes)):
        regions, count = ndimage.label(mask == value)
        if count == 0:
            continue
        slices = ndimage.find_objects(regions)
        sizes = np.bincount(regions.ravel(), minlength=count + 1)  # specks skipped unvisited
        for index, box in enumerate(slices, start=1):
            if box is None or sizes[index] < min_pixels:
                continue
            feature = _region_feature(
                regions, index, box, int(sizes[index]), 0, value, spec, downsample, mpp
            )
            if feature is not None:
                features.append(feature)
    return features


def _region_feature(
    regions: npt.NDArray[np.int32],
    index: int,
    box: tuple[slice, slice],
    pixels: int,
    row0: int,
    value: int,
    spec: ModelSpec,
    downsample: float,
    mpp: float | None,
) -> dict[str, Any] | None:
    """The polygon of region ``index`` (bounding ``box``) of a labelled mask whose first row is
    row ``row0`` of the whole mask; None when no ring survives."""
    rows, cols = box
    crop = np.zeros((rows.stop - rows.start + 2, cols.stop - cols.start + 2), dtype=np.float32)
    crop[1:-1, 1:-1] = regions[box] == index  # a zero frame: every ring closes (np.pad is slow)
    oy, ox = box[0].start - 1 + row0, box[1].start - 1
    rings = []
    for contour in measure.find_contours(crop, 0.5):  # type: ignore[no-untyped-call]
        simplified = _drop_collinear(contour)
        if len(simplified) < 4:
            continue
        # (row, col) -> level-0 (x, y); pixel centres sit at +0.5
        xy = np.stack(
            [
                (simplified[:, 1] + ox + 0.5) * downsample,
                (simplified[:, 0] + oy + 0.5) * downsample,
            ],
            axis=1,
        )
        rings.append(xy)
    if not rings:
        return None
    rings.sort(key=_ring_area, reverse=True)  # the exterior encloses the most area
    coordinates = []
    for ring in rings:
        # tolist: the same Python floats as float(), without a numpy scalar per coordinate;
        # multiples of 0.5 (every corner at a power-of-two downsample) already have one decimal
        if np.array_equal(np.floor(ring * 2), ring * 2):
            points = ring.tolist()
        else:
            points = [[round(x, 1), round(y, 1)] for x, y in ring.tolist()]
        if points[0] != points[-1]:
            points.append(points[0])
        coordinates.append(points)
    area_px = pixels * downsample * downsample
    measurements: dict[str, float] = {"Area px^2": area_px}
    if mpp is not None:
        measurements["Area µm^2"] = area_px * mpp * mpp
    r, g, b = spec.colors[value]
    return {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": coordinates},
        "properties": {
            "objectType": "annotation",
            "classification": {"name": spec.classes[value], "color": [r, g, b]},
            "isLocked": False,
            "measurements": measurements,
            "iain": {"ai_generated": True, "validation": "pending"},
        },
    }


class RowTracer:
    """The same features as :func:`mask_to_features`, traced band by band while the mask is
    still being written, top to bottom.

    After :meth:`advance` to row ``done``, every region not touching row ``done - 1`` is final
    (4-connected regions reach lower rows only through it) and is traced now; the others wait,
    and the next band starts at the highest of their first rows. Features are sorted at the end
    by (class, first pixel in raster order), the order ``ndimage.label`` numbers regions in, so
    the result equals one pass over the whole mask. The mask lives here (at most
    ``MAX_TRACE_PIXELS`` bytes); writers fill it with :meth:`paste`.
    """

    def __init__(
        self,
        shape: tuple[int, int],
        spec: ModelSpec,
        downsample: float,
        mpp: float | None,
        min_pixels: int = 4,
    ) -> None:
        self.mask = np.zeros(shape, dtype=np.uint8)
        self.spec = spec
        self.downsample = downsample
        self.mpp = mpp
        self.min_pixels = min_pixels
        self.done = 0  # rows traced up to
        self._starts = {value: 0 for value in range(1, len(spec.classes))}  # next band's top
        self._found: list[tuple[int, int, dict[str, Any]]] = []

    def paste(self, x0: int, y0: int, block: npt.NDArray[np.uint8]) -> None:
        """Copy ``block`` (h, w) to mask pixel (x0, y0), clipped to the mask."""
        height, width = self.mask.shape
        h, w = min(block.shape[0], height - y0), min(block.shape[1], width - x0)
        if h > 0 and w > 0:
            self.mask[y0 : y0 + h, x0 : x0 + w] = block[:h, :w]

    def advance(self, done: int) -> None:
        """Rows ``[0, done)`` are final: trace every region that cannot grow any more."""
        height, width = self.mask.shape
        done = min(done, height)
        if done <= self.done:
            return
        last = done == height
        for value, start in self._starts.items():
            regions, count = ndimage.label(self.mask[start:done] == value)
            next_start = done
            if count:
                slices = ndimage.find_objects(regions)
                sizes = np.bincount(regions.ravel(), minlength=count + 1)
                for index, box in enumerate(slices, start=1):
                    if box is None:
                        continue
                    top, stop = start + box[0].start, start + box[0].stop
                    if stop < self.done:  # final in an earlier band: already traced
                        continue
                    if stop == done and not last:  # may go on below
                        next_start = min(next_start, top)
                        continue
                    if sizes[index] < self.min_pixels:
                        continue
                    feature = _region_feature(
                        regions, index, box, int(sizes[index]), start, value,
                        self.spec, self.downsample, self.mpp,
                    )  # fmt: skip
                    if feature is not None:
                        first_x = box[1].start + int(np.argmax(regions[box][0] == index))
                        self._found.append((value, top * width + first_x, feature))
            self._starts[value] = next_start
        self.done = done

    def features(self) -> list[dict[str, Any]]:
        """Every feature, once the whole mask is traced, in :func:`mask_to_features`' order."""
        self.advance(self.mask.shape[0])
        return [feature for _, _, feature in sorted(self._found, key=lambda f: f[:2])]


def write_geojson(path: Path, features: list[dict[str, Any]], spec: ModelSpec) -> None:
    """Write atomically (temp file + rename) so readers never see half a file."""
    collection = {
        "type": "FeatureCollection",
        "features": features,
        "properties": {
            "model": spec.name,
            "model_version": spec.version,
            "ai_generated": True,
            "validation": "pending",
            "coordinates": "level-0 pixels",
        },
    }
    tmp = path.with_suffix(".geojson.tmp")
    tmp.write_text(json.dumps(collection))
    tmp.replace(path)

"""Class outlines as QuPath GeoJSON: one Polygon annotation per connected region.

Contours are traced on one mask level small enough to hold in memory (at most
``MAX_TRACE_PIXELS``) with scikit-image's marching squares, then scaled to level-0 pixels, the
plane QuPath and the viewer use. Holes are kept as interior rings.
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

__all__ = ["MAX_TRACE_PIXELS", "mask_to_features", "write_geojson"]

MAX_TRACE_PIXELS = 4096 * 4096


def _ring_area(ring: npt.NDArray[np.float64]) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def _drop_collinear(points: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Keep only the corners of a marching-squares ring (exact, unlike a tolerance simplifier;
    and skimage's approximate_polygon would import scipy.signal, seconds on a busy machine)."""
    ring = points[:-1] if len(points) > 1 and np.array_equal(points[0], points[-1]) else points
    if len(ring) < 3:
        return points
    prev, nxt = np.roll(ring, 1, axis=0), np.roll(ring, -1, axis=0)
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
            crop = np.pad(regions[box] == index, 1).astype(np.float32)
            pixels = int(sizes[index])
            oy, ox = box[0].start - 1, box[1].start - 1
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
                continue
            rings.sort(key=_ring_area, reverse=True)  # the exterior encloses the most area
            coordinates = []
            for ring in rings:
                # tolist: the same Python floats as float(), without a numpy scalar per coordinate
                points = [[round(x, 1), round(y, 1)] for x, y in ring.tolist()]
                if points[0] != points[-1]:
                    points.append(points[0])
                coordinates.append(points)
            area_px = pixels * downsample * downsample
            measurements: dict[str, float] = {"Area px^2": area_px}
            if mpp is not None:
                measurements["Area µm^2"] = area_px * mpp * mpp
            r, g, b = spec.colors[value]
            features.append(
                {
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
            )
    return features


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

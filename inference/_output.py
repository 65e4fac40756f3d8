"""The label pyramid inside the slide's own store: ``STORE.zarr/labels/<model>/``.

::

    labels/zarr.json             {"ome": {"version": "0.5", "labels": ["<model>", ...]}}
    labels/<model>/zarr.json     NGFF image-label (class colours), multiscales (y, x), and
                                 "iain": {ai_generated, validation: "pending", model, status, ...}
    labels/<model>/0..n          uint8 argmax mask, same (height, width) and chunking as image
                                 level k; levels above the inference level are nearest-neighbour
                                 reductions, levels below it nearest-neighbour expansions
    labels/<model>/probabilities uint8 (classes, y, x) at the inference level, 0-255 per class
    labels/<model>/.progress/    one empty file per finished work unit; removed when complete

A work unit is written chunk-aligned, then its marker is created: a kill -9 loses at most the
units in flight, and a re-run with the same fingerprint skips the marked ones.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import zarr

from inference.spec import ModelSpec
from tiling.layout import LABELS_GROUP

__all__ = ["PROBABILITIES", "LabelWriter"]

logger = logging.getLogger(__name__)

PROBABILITIES = "probabilities"
_PROGRESS = ".progress"
_BLOCK_CHUNKS = 4  # pyramid reductions work on blocks of 4 x 4 output chunks: bounded memory


class LabelWriter:
    """Creates (or reopens, to resume) one model's label group and writes units into it."""

    def __init__(
        self,
        store: Path,
        spec: ModelSpec,
        level_sizes: list[tuple[int, int]],
        chunk: tuple[int, int],
        level: int,
        mpp: float,
        fingerprint: dict[str, Any],
    ) -> None:
        self.store = store
        self.spec = spec
        self.level_sizes = level_sizes  # (width, height) per image level
        self.chunk_w, self.chunk_h = chunk
        self.level = level
        self.mpp = mpp
        self.fingerprint = fingerprint
        self.labels_dir = store / LABELS_GROUP
        self.group_dir = self.labels_dir / spec.name
        self.progress_dir = self.group_dir / _PROGRESS
        self._mask: zarr.Array[Any] | None = None
        self._probs: zarr.Array[Any] | None = None

    # ------------------------------------------------------------------ setup / resume
    def prepare(self) -> set[int]:
        """Create the group and arrays unless a compatible run exists; return finished units."""
        existing = self._read_attrs()
        if existing is not None and existing.get("fingerprint") == self.fingerprint:
            if existing.get("status") == "complete":
                return {-1}
            done = {int(p.name) for p in self.progress_dir.glob("[0-9]*")}
            logger.info("resuming %s: %d units already written", self.spec.name, len(done))
            return done
        if self.group_dir.exists():
            logger.info("labels %s exist with other parameters: starting over", self.spec.name)
            shutil.rmtree(self.group_dir)
        self._create()
        return set()

    def _read_attrs(self) -> dict[str, Any] | None:
        try:
            meta = json.loads((self.group_dir / "zarr.json").read_text())
            iain = meta["attributes"]["iain"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return iain if isinstance(iain, dict) else None

    def _create(self) -> None:
        labels = zarr.open_group(str(self.labels_dir), mode="a", zarr_format=3)
        ome = labels.attrs.get("ome", {})
        listed = ome.get("labels", []) if isinstance(ome, dict) else []
        names = [n for n in listed if n != self.spec.name] + [self.spec.name]
        labels.attrs["ome"] = {"version": "0.5", "labels": names}
        group = zarr.open_group(str(self.group_dir), mode="w", zarr_format=3)
        for k, (width, height) in enumerate(self.level_sizes):
            group.create_array(
                str(k),
                shape=(height, width),
                chunks=(self.chunk_h, self.chunk_w),
                dtype="uint8",
                fill_value=0,
                dimension_names=["y", "x"],
            )
        width, height = self.level_sizes[self.level]
        n_classes = len(self.spec.classes)
        probs = group.create_array(
            PROBABILITIES,
            shape=(n_classes, height, width),
            chunks=(n_classes, self.chunk_h, self.chunk_w),
            dtype="uint8",
            fill_value=0,
            dimension_names=["c", "y", "x"],
        )
        probs.attrs["iain"] = {"level": self.level, "classes": list(self.spec.classes)}
        group.attrs.update(self._group_attrs(status="running"))
        self.progress_dir.mkdir(parents=True, exist_ok=True)

    def _group_attrs(self, status: str) -> dict[str, Any]:
        spec = self.spec
        base_w = self.level_sizes[0][0]
        datasets = []
        for k, (width, _) in enumerate(self.level_sizes):
            scale = self.mpp * base_w / width
            datasets.append(
                {
                    "path": str(k),
                    "coordinateTransformations": [{"type": "scale", "scale": [scale, scale]}],
                }
            )
        return {
            "ome": {
                "version": "0.5",
                "multiscales": [
                    {
                        "name": spec.name,
                        "axes": [
                            {"name": "y", "type": "space", "unit": "micrometer"},
                            {"name": "x", "type": "space", "unit": "micrometer"},
                        ],
                        "datasets": datasets,
                        "type": "nearest",
                    }
                ],
                "image-label": {
                    "version": "0.5",
                    "colors": [
                        {"label-value": i, "rgba": [*rgb, 0 if i == 0 else 255]}
                        for i, rgb in enumerate(spec.colors)
                    ],
                    "properties": [
                        {"label-value": i, "class": name} for i, name in enumerate(spec.classes)
                    ],
                    "source": {"image": "../../"},
                },
            },
            "iain": {
                "ai_generated": True,
                "validation": "pending",  # a pathologist must accept or correct it
                "model": spec.name,
                "model_version": spec.version,
                "classes": list(spec.classes),
                "inference_level": self.level,
                "probabilities": PROBABILITIES,
                "status": status,
                "fingerprint": self.fingerprint,
            },
        }

    # ------------------------------------------------------------------ unit writes
    def open_arrays(self) -> None:
        group = zarr.open_group(str(self.group_dir), mode="r+", zarr_format=3)
        mask = group[str(self.level)]
        probs = group[PROBABILITIES]
        assert isinstance(mask, zarr.Array) and isinstance(probs, zarr.Array)
        self._mask, self._probs = mask, probs

    def write_unit(
        self,
        index: int,
        x0: int,
        y0: int,
        mask: npt.NDArray[np.uint8],
        probs: npt.NDArray[np.uint8],
    ) -> None:
        """Write one chunk-aligned unit at inference-level pixel (x0, y0), then mark it done."""
        if self._mask is None or self._probs is None:
            self.open_arrays()
        assert self._mask is not None and self._probs is not None
        height, width = mask.shape
        self._mask[y0 : y0 + height, x0 : x0 + width] = mask
        self._probs[:, y0 : y0 + height, x0 : x0 + width] = probs
        (self.progress_dir / str(index)).touch()

    # ------------------------------------------------------------------ finish
    def finish(self) -> None:
        """Build the other mask levels from the inference level, then mark the run complete."""
        group = zarr.open_group(str(self.group_dir), mode="r+", zarr_format=3)
        for k in range(self.level + 1, len(self.level_sizes)):
            self._reduce(group[str(k - 1)], group[str(k)])  # type: ignore[arg-type]
        for k in range(self.level - 1, -1, -1):
            self._expand(group[str(k + 1)], group[str(k)])  # type: ignore[arg-type]
        group.attrs.update(self._group_attrs(status="complete"))
        shutil.rmtree(self.progress_dir, ignore_errors=True)

    def _blocks(self, array: zarr.Array[Any]) -> Iterator[tuple[int, int, int, int]]:
        height, width = array.shape
        step_y, step_x = self.chunk_h * _BLOCK_CHUNKS, self.chunk_w * _BLOCK_CHUNKS
        for y in range(0, height, step_y):
            for x in range(0, width, step_x):
                yield x, y, min(x + step_x, width), min(y + step_y, height)

    def _reduce(self, src: zarr.Array[Any], dst: zarr.Array[Any]) -> None:
        """Nearest-neighbour halving: dst[y, x] = src[2y, 2x] (labels never average)."""
        for x0, y0, x1, y1 in self._blocks(dst):
            block = np.asarray(src[2 * y0 : 2 * y1, 2 * x0 : 2 * x1])
            dst[y0:y1, x0:x1] = block[::2, ::2]

    def _expand(self, src: zarr.Array[Any], dst: zarr.Array[Any]) -> None:
        """Nearest-neighbour doubling: dst[y, x] = src[y // 2, x // 2]."""
        for x0, y0, x1, y1 in self._blocks(dst):
            block = np.asarray(src[y0 // 2 : math.ceil(y1 / 2), x0 // 2 : math.ceil(x1 / 2)])
            block = block.repeat(2, axis=0).repeat(2, axis=1)
            dst[y0:y1, x0:x1] = block[: y1 - y0, : x1 - x0]  # block origins are even

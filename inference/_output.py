"""The label pyramid inside the slide's own store: ``STORE.zarr/labels/<model>/``.

::

    labels/zarr.json             {"ome": {"version": "0.5", "labels": ["<model>", ...]}}
    labels/<model>/zarr.json     NGFF image-label (class colours), multiscales (y, x), and
                                 "iain": {ai_generated, validation: "pending", model, status, ...}
    labels/<model>/0..n          uint8 argmax mask, same (height, width) and chunking as image
                                 level k; levels above the inference level are nearest-neighbour
                                 reductions, levels below it nearest-neighbour expansions
    labels/<model>/probabilities uint8 (classes, y, x) at the inference level, 0-255 per class,
                                 one chunk per work unit (one file per unit, not 16: file creation
                                 was a third of the writer's CPU, and each is a PUT on S3)
    labels/<model>/.progress/    one empty file per finished work unit; removed when complete

A work unit is written chunk-aligned, then its marker is created: a kill -9 loses at most the
units in flight, and a re-run with the same fingerprint skips the marked ones.

The pyramid is built as units finish, not in a pass at the end: each unit writes its own chunks
of every level below the inference level (expansions) and of the levels above it whose chunks it
covers whole (``unit_px`` divisible by the chunk times the reduction); only the coarser levels,
where one chunk gathers several units, are reduced in :meth:`LabelWriter.finish`, from a level
that is already 1/16 of the inference level or less. Chunks are encoded (blosc-LZ4) and written as
files here, beside zarr, in the layout zarr reads (``<array>/c/<row>/<col>``, edge chunks padded,
all-fill chunks absent): a chunk write is one compression and one rename.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import zarr
from numcodecs import Blosc
from zarr.codecs import BloscCodec

from inference.spec import ModelSpec
from tiling._sink import LocalSink
from tiling.layout import LABELS_GROUP

__all__ = ["PROBABILITIES", "LabelWriter"]

logger = logging.getLogger(__name__)

PROBABILITIES = "probabilities"
_PROGRESS = ".progress"
_BLOCK_CHUNKS = 4  # pyramid reductions work on blocks of 4 x 4 output chunks: bounded memory
# LZ4 in blosc (a core zarr v3 codec): masks still shrink 10-200x, and tissue probabilities,
# whose low bits are noise, 1.7x against zstd's 2.1x at under half of zstd-1's CPU time
_CNAME, _CLEVEL = "lz4", 5
# written into the run's fingerprint: a run left by a writer that built the pyramid at the end
# (no upper levels per unit) is started over, never resumed into a half-built pyramid
WRITER_LAYOUT = "incremental-3"  # 3: probabilities chunked by work unit


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
        unit_px: tuple[int, int] | None = None,
    ) -> None:
        """``unit_px``: (width, height) of every work unit but the last row and column, at the
        inference level; None when units are arbitrary (then upper levels wait for finish)."""
        self.store = store
        self.spec = spec
        self.level_sizes = level_sizes  # (width, height) per image level
        self.chunk_w, self.chunk_h = chunk
        self.level = level
        self.mpp = mpp
        self.fingerprint = {**fingerprint, "writer": WRITER_LAYOUT}
        self.direct_up = _direct_levels(unit_px, chunk, len(level_sizes) - 1 - level)
        self.unit_w, self.unit_h = unit_px or chunk  # the probabilities' chunk
        self.labels_dir = store / LABELS_GROUP
        self.group_dir = self.labels_dir / spec.name
        self.progress_dir = self.group_dir / _PROGRESS
        self.sink = LocalSink(self.group_dir)
        self._stale = True  # chunks from a killed run may exist: all-fill chunks are removed
        self._codec = Blosc(cname=_CNAME, clevel=_CLEVEL, shuffle=Blosc.NOSHUFFLE)

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
        self._stale = False
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
                chunks=self._chunk_shape(k),
                dtype="uint8",
                fill_value=0,
                compressors=_compressor(),
                dimension_names=["y", "x"],
            )
        width, height = self.level_sizes[self.level]
        n_classes = len(self.spec.classes)
        probs = group.create_array(
            PROBABILITIES,
            shape=(n_classes, height, width),
            chunks=(n_classes, self.unit_h, self.unit_w),
            dtype="uint8",
            fill_value=0,
            compressors=_compressor(),
            dimension_names=["c", "y", "x"],
        )
        probs.attrs["iain"] = {"level": self.level, "classes": list(self.spec.classes)}
        group.attrs.update(self._group_attrs(status="running"))
        self.progress_dir.mkdir(parents=True, exist_ok=True)

    def _chunk_shape(self, level: int) -> tuple[int, int]:
        """(height, width) of a chunk of mask ``level``: the image's, except below the inference
        level, where one chunk is the expansion of one inference-level chunk (a unit writes 16
        files per level there, not 16 x 4**d)."""
        factor = 1 << max(0, self.level - level)
        return self.chunk_h * factor, self.chunk_w * factor

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
    def write_unit(
        self,
        index: int,
        x0: int,
        y0: int,
        mask: npt.NDArray[np.uint8],
        probs: npt.NDArray[np.uint8],
        pool: Executor | None = None,
    ) -> None:
        """Write one chunk-aligned unit at inference-level pixel (x0, y0), with its share of the
        other levels, then mark it done; the probabilities in ``pool`` if given, beside the
        mask levels (LZ4 and file writes release the GIL)."""
        probabilities = pool.submit(self._write_probabilities, x0, y0, probs) if pool else None
        self._write_block(str(self.level), x0, y0, mask)
        if probabilities is None:
            self._write_probabilities(x0, y0, probs)
        for d in range(1, self.direct_up + 1):  # nearest-neighbour reductions: dst = src[2y, 2x]
            step = 1 << d
            self._write_block(str(self.level + d), x0 // step, y0 // step, mask[::step, ::step])
        if self.level > 0:  # nearest-neighbour expansions: dst = src[y/2, x/2]
            self._write_expanded(x0, y0, mask)
        if probabilities is not None:
            probabilities.result()
        (self.progress_dir / str(index)).touch()

    def _write_block(
        self, array: str, x0: int, y0: int, block: npt.NDArray[np.uint8], prefix: str = "",
        chunk: tuple[int, int] | None = None,
    ) -> None:  # fmt: skip
        """Chunk files of ``block`` (..., h, w), whose top-left (x0, y0) is chunk-aligned and
        which covers every chunk it touches (or reaches the level's edge); ``chunk``: (height,
        width) of the array's chunks, the mask's by default."""
        chunk_h, chunk_w = chunk or (self.chunk_h, self.chunk_w)
        height, width = block.shape[-2:]
        for by in range(0, height, chunk_h):
            for bx in range(0, width, chunk_w):
                tile = block[..., by : by + chunk_h, bx : bx + chunk_w]
                row, col = (y0 + by) // chunk_h, (x0 + bx) // chunk_w
                self._write_chunk(f"{array}/c/{prefix}{row}/{col}", tile, (chunk_h, chunk_w))

    def _write_probabilities(self, x0: int, y0: int, probs: npt.NDArray[np.uint8]) -> None:
        """The unit's probabilities, in chunks of the unit's size (one per unit)."""
        self._write_block(PROBABILITIES, x0, y0, probs, "0/", (self.unit_h, self.unit_w))

    def _write_expanded(self, x0: int, y0: int, mask: npt.NDArray[np.uint8]) -> None:
        """The unit's chunks of every finer level: chunk (row, col) of level ``level - d`` is
        inference-level chunk (row, col) doubled d times, one chunk at a time."""
        for by in range(0, mask.shape[0], self.chunk_h):
            for bx in range(0, mask.shape[1], self.chunk_w):
                src = mask[by : by + self.chunk_h, bx : bx + self.chunk_w]
                row, col = (y0 + by) // self.chunk_h, (x0 + bx) // self.chunk_w
                empty = not src.max()  # background: no chunk (the common case: glass)
                tile = src
                for level in range(self.level - 1, -1, -1):
                    key = f"{level}/c/{row}/{col}"
                    if empty:
                        if self._stale:
                            self.sink.remove(key)
                        continue
                    tile = _double(tile)
                    step = 1 << (self.level - level)
                    width, height = self.level_sizes[level]
                    crop = tile[: height - (y0 + by) * step, : width - (x0 + bx) * step]
                    self._write_chunk(key, crop, self._chunk_shape(level))

    def _write_chunk(
        self, key: str, tile: npt.NDArray[np.uint8], shape: tuple[int, int] | None = None
    ) -> None:
        """One chunk as zarr stores it: padded to the chunk shape with the fill value (0), LZ4;
        an all-fill chunk is not stored (and a stale one from a killed run is removed)."""
        if not tile.max():
            if self._stale:
                self.sink.remove(key)
            return
        shape = shape or (self.chunk_h, self.chunk_w)
        if tile.shape[-2:] != shape:
            full = np.zeros((*tile.shape[:-2], *shape), np.uint8)
            full[..., : tile.shape[-2], : tile.shape[-1]] = tile
            tile = full
        self.sink.write(key, bytes(self._codec.encode(np.ascontiguousarray(tile))))

    # ------------------------------------------------------------------ finish
    def finish(self) -> None:
        """Reduce the coarse levels no single unit covers, then mark the run complete."""
        group = zarr.open_group(str(self.group_dir), mode="r+", zarr_format=3)
        for k in range(self.level + self.direct_up + 1, len(self.level_sizes)):
            self._reduce(group[str(k - 1)], group[str(k)])  # type: ignore[arg-type]
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


def _direct_levels(unit_px: tuple[int, int] | None, chunk: tuple[int, int], above: int) -> int:
    """How many levels above the inference level a unit fills with whole chunks of its own: d
    such that 2**d x chunk divides the unit (all units share a chunk-aligned grid)."""
    if unit_px is None:
        return 0
    d = 0
    while d < above and all(u % (c << (d + 1)) == 0 for u, c in zip(unit_px, chunk, strict=True)):
        d += 1
    return d


def _double(block: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Nearest-neighbour 2x of a uint8 (h, w) block: each byte becomes a uint16 holding it twice
    (x 257), each row is written twice; 20x faster than numpy's broadcast-and-reshape."""
    height, width = block.shape
    pairs = block.astype(np.uint16) * np.uint16(257)
    out = np.empty((height, 2, width), dtype=np.uint16)
    out[:] = pairs[:, None, :]
    return out.reshape(2 * height, width).view(np.uint8)


def _compressor() -> BloscCodec:
    return BloscCodec(cname="lz4", clevel=_CLEVEL, shuffle="noshuffle", typesize=1)

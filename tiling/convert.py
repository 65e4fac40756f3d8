"""Build an IAIN pyramid (see :mod:`tiling.layout`) from any :class:`wsi.reader.SlideReader`.

How it stays fast and small:

- level 0 is copied chunk = stored tile, bit-identical, wherever the source stores JPEG tiles;
  otherwise regions are read tile by tile and encoded once;
- level 1 is made from level-0 JPEGs decoded at 1/2 scale by libjpeg's scaled IDCT (Pillow's
  ``draft``), never by full decode + resize; edge tiles with odd sizes are decoded fully and
  area-averaged so their last pixel is exact;
- the pyramid is a quadtree reduction: each finished tile gives its 2x area-averaged quadrant
  to its parent, which is encoded as soon as its (up to) four children arrived. Level-0 tiles go
  in row-major order with a bounded number in flight, so pending parents hold one tile row
  per level: memory is O(width), never O(area);
- JPEG work runs on a thread pool (libjpeg-turbo releases the GIL); large slides read by a
  wsi backend are cut into column bands of 8 level-0 tiles, each built up to level 3 in one of
  ``workers`` forked processes (threads share one GIL, which starves them on a busy machine),
  and the top levels are finished here from the bands' level-3 quadrants.

Atomic and resumable (local output): everything is written under ``OUT.partial-<sha[:12]>``,
each chunk through a temp file + rename; a re-run with the same source and settings skips the
chunks present; publishing is one ``renameat2(RENAME_EXCHANGE)`` (or rename-aside fallback).
For ``s3://`` there is no rename: chunks go to OUT's prefix and the root ``zarr.json`` last.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import itertools
import json
import logging
import math
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import (
    FIRST_COMPLETED,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tiling._metadata import ROOT_KEY, pyramid_documents, root_document
from tiling._pixels import downsample2, half_decode, pad_edges
from tiling._psnr import (
    MAX_REPAIRS,
    SAMPLE_TILES,
    SampleTile,
    choose_steps,
    finer_steps,
    measured_info,
    psnr_db,
    saved_steps,
    squared_error,
)
from tiling._publish import publish_local
from tiling._sink import ChunkSink, LocalSink, StoreSink
from tiling.codec import decode_jpeg, encode_jpeg, encode_jpeg_flat
from tiling.config import TilingConfig
from tiling.errors import InvalidOutputError, OutputExistsError, SourceReadError, TilingError
from tiling.layout import ASSOCIATED_GROUP, FILL_VALUE, PyramidSpec, chunk_key
from wsi.errors import SlideError
from wsi.reader import MAX_LEVEL0_PIXELS, MAX_SIDE_PX, Mpp, SlideReader

__all__ = ["CONVERTER_VERSION", "Progress", "ProgressCallback", "build_pyramid", "source_digest"]

logger = logging.getLogger(__name__)

CONVERTER_VERSION = "iain-tiling 0.1.0"
BUILD_MARKER = ".iain-build.json"  # in a partial output only; says which source/settings it holds
STEPS_KEY = ".iain-steps.json"  # in a partial output only: the reduced levels' steps, for resuming

RGB = npt.NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class Progress:
    """Tiles done out of the pyramid's total; ``skipped`` were already present (resume)."""

    done: int
    total: int
    skipped: int
    elapsed_s: float
    phase: str  # "tiles" while building, "published" at the end


ProgressCallback = Callable[[Progress], None]


def source_digest(path: Path) -> tuple[str, int]:
    """(sha256 hex, size in bytes) of a slide file, or of a slide directory's files in order."""
    digest = hashlib.sha256()
    size = 0
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with file.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
    return digest.hexdigest(), size


# ---------------------------------------------------------------------------- output


def _open_s3(url: str, config: TilingConfig) -> StoreSink:
    from zarr.storage import FsspecStore

    try:
        store = FsspecStore.from_url(url, storage_options=dict(config.s3_options), read_only=False)
    except (ValueError, ImportError) as exc:
        raise InvalidOutputError(f"cannot open {url}: {exc}") from exc
    return StoreSink(store)


# ---------------------------------------------------------------------------- the build


_BATCH = 8  # tiles per pool task
_Result = tuple[int, int, int, "RGB | None"]  # (level, col, row, quadrant for the parent)


@dataclass(slots=True)
class _Parent:
    pixels: RGB
    remaining: int


class _Builder:
    """One pyramid build: the quadtree reduction over a thread pool."""

    def __init__(
        self,
        reader: SlideReader,
        sink: ChunkSink,
        spec: PyramidSpec,
        *,
        copy_level0: bool,
        quality: int,
        subsampling: str,
        optimize: bool,
        workers: int,
        progress: ProgressCallback | None,
        steps: Sequence[float] | None = None,
        redo: frozenset[int] = frozenset(),
    ) -> None:
        self.reader = reader
        self.sink = sink
        self.spec = spec
        self.copy = copy_level0
        self.quality = quality
        self.subsampling = subsampling
        self.optimize = optimize
        self.workers = workers
        self.progress = progress
        self.levels = spec.level_count
        self.grids = [spec.grid(level) for level in range(self.levels)]
        self.sizes = [spec.level_size(level) for level in range(self.levels)]
        self.total = sum(cols * rows for cols, rows in self.grids)
        self.done = 0
        self.skipped = 0
        self.started = time.monotonic()
        self._count_lock = threading.Lock()
        self._parents: list[dict[tuple[int, int], _Parent]] = [{} for _ in range(self.levels)]
        self._last_report = 0.0
        self.exported: list[_Result] = []
        # flat quantiser step per level (None: reduced levels at ``quality`` like level 0);
        # ``redo`` levels are re-encoded even where a chunk exists (a too-coarse first step)
        self.steps = list(steps) if steps is not None else None
        self.redo = redo
        self.sse = [0] * self.levels  # measured squared error per level, exact integers

    def _count_skip(self) -> None:
        with self._count_lock:
            self.skipped += 1

    def _valid(self, level: int, col: int, row: int) -> tuple[int, int]:
        width, height = self.sizes[level]
        return (
            min(self.spec.tile_width, width - col * self.spec.tile_width),
            min(self.spec.tile_height, height - row * self.spec.tile_height),
        )

    def _children(self, level: int, col: int, row: int) -> int:
        """How many tiles of ``level - 1`` feed tile (col, row) of ``level``."""
        cols, rows = self.grids[level - 1]
        return (min(2 * col + 2, cols) - 2 * col) * (min(2 * row + 2, rows) - 2 * row)

    # -- tasks (run on the pool)

    def _level0_task(self, col: int, row: int) -> _Result:
        key = chunk_key(0, col, row)
        data = self.sink.read(key) if self.sink.exists(key) else None
        pixels: RGB | None = None
        if data is not None:
            self._count_skip()
        elif self.copy:
            # thread-safe by the SlideReader contract (one pread), tested in tests/wsi
            data = self.reader.read_stored_tile(0, col, row)
            self.sink.write(key, data)
        else:
            pixels = self._level0_pixels(col, row)
            padded = pad_edges(pixels, *self._valid(0, col, row))
            data = encode_jpeg(padded, self.quality, self.subsampling, self.optimize)
            self.sink.write(key, data)
        if self.levels == 1:
            if pixels is None:  # no reduced level will decode it: check the copy decodes
                self._full_decode(data, col, row)
            return 0, col, row, None
        return 0, col, row, self._quadrant0(col, row, data, pixels)

    def _level0_pixels(self, col: int, row: int) -> RGB:
        """A level-0 tile read through ``read_region``, white beyond the slide's edge."""
        valid_w, valid_h = self._valid(0, col, row)
        tw, th = self.spec.tile_width, self.spec.tile_height
        region = self.reader.read_region((col * tw, row * th), 0, (valid_w, valid_h))
        pixels = np.full((th, tw, 3), FILL_VALUE, dtype=np.uint8)
        pixels[:valid_h, :valid_w] = region[:valid_h, :valid_w, :3]
        return pixels

    def _quadrant0(self, col: int, row: int, data: bytes, pixels: RGB | None) -> RGB:
        """The 2x area average of level-0 tile (col, row): its quadrant of a level-1 tile."""
        valid_w, valid_h = self._valid(0, col, row)
        tw, th = self.spec.tile_width, self.spec.tile_height
        if pixels is None and valid_w % 2 == 0 and valid_h % 2 == 0:
            half = half_decode(data, tw, th)
            if half is not None:
                if valid_w < tw or valid_h < th:  # the stored tile's padding is not ours
                    half = half.copy()
                    half[valid_h // 2 :] = FILL_VALUE
                    half[:, valid_w // 2 :] = FILL_VALUE
                return half
        if pixels is None:
            pixels = self._full_decode(data, col, row)
        return downsample2(pixels, valid_w, valid_h)

    def sample_patches(self, count: int) -> list[list[SampleTile]]:
        """Per level (index = level), the pixels the build will encode over up to ``count``
        level-0 tiles spread across the slide (R2 low-discrepancy points): one tile read gives
        its patch of every level (128 px at level 1, 64 at level 2, ...) down to 8 px, so even
        the small levels are sampled at ``count`` places for the price of ``count`` reads."""
        cols, rows = self.grids[0]
        picked: dict[tuple[int, int], None] = {}
        for i in range(4 * count):
            if len(picked) >= min(count, cols * rows):
                break
            x, y = (0.5 + i * 0.7548776662) % 1.0, (0.5 + i * 0.5698402910) % 1.0
            picked[(int(x * cols), int(y * rows))] = None
        patches: list[list[SampleTile]] = [[] for _ in range(self.levels)]
        for col, row in picked:
            pixels = None if self.copy else self._level0_pixels(col, row)
            data = self.reader.read_stored_tile(0, col, row) if self.copy else b""
            width, height = self._valid(0, col, row)
            tile = self._quadrant0(col, row, data, pixels)
            for level in range(1, self.levels):
                if level > 1:  # a patch, not a whole tile: even sides for the ceil rule
                    tile = np.pad(tile, ((0, tile.shape[0] % 2), (0, tile.shape[1] % 2), (0, 0)))
                    tile = downsample2(tile, width, height)
                width, height = -(-width // 2), -(-height // 2)
                if min(width, height) < 8:  # below one DCT block: not a fair sample
                    break
                patch = np.ascontiguousarray(tile[:height, :width])
                patches[level].append((patch, width, height))
        return patches

    def level_psnr(self) -> list[float]:
        """Measured PSNR of each level (index = level; level 0 is not measured: inf)."""
        return [math.inf] + [
            psnr_db(self.sse[level], 3 * math.prod(self.sizes[level]))
            for level in range(1, self.levels)
        ]

    def _full_decode(self, data: bytes, col: int, row: int) -> RGB:
        tw, th = self.spec.tile_width, self.spec.tile_height
        try:
            pixels = decode_jpeg(data)
        except TilingError as exc:
            raise SourceReadError(f"stored tile ({col}, {row}) of level 0: {exc}") from exc
        if pixels.shape[0] < th or pixels.shape[1] < tw:
            raise SourceReadError(
                f"stored tile ({col}, {row}) is {pixels.shape[1]}x{pixels.shape[0]}, "
                f"expected {tw}x{th}"
            )
        return pixels[:th, :tw]

    def _reduced_task(self, level: int, col: int, row: int, pixels: RGB) -> _Result:
        key = chunk_key(level, col, row)
        valid_w, valid_h = self._valid(level, col, row)
        data: bytes | None = None
        if level not in self.redo and self.sink.exists(key):
            self._count_skip()
            if self.steps is not None:  # resumed: its error still counts
                data = self.sink.read(key)
        else:
            padded = pad_edges(pixels, valid_w, valid_h)
            if self.steps is not None:
                data = encode_jpeg_flat(padded, self.steps[level])
            else:
                data = encode_jpeg(padded, self.quality, self.subsampling, self.optimize)
            self.sink.write(key, data)
        if self.steps is not None and data is not None:
            sse = squared_error(pixels, data, valid_w, valid_h)
            with self._count_lock:
                self.sse[level] += sse
        if level + 1 >= self.levels:
            return level, col, row, None
        return level, col, row, downsample2(pixels, valid_w, valid_h)

    # -- the driver (main thread)

    def _give_quadrant(self, level: int, col: int, row: int, quadrant: RGB) -> RGB | None:
        """Place a child's quadrant into its parent at ``level + 1``; the parent when complete."""
        parent_level = level + 1
        key = (col // 2, row // 2)
        parents = self._parents[parent_level]
        parent = parents.get(key)
        if parent is None:
            th, tw = self.spec.tile_height, self.spec.tile_width
            parent = _Parent(
                np.full((th, tw, 3), FILL_VALUE, dtype=np.uint8),
                self._children(parent_level, *key),
            )
            parents[key] = parent
        qh, qw = quadrant.shape[:2]
        y0, x0 = (row % 2) * qh, (col % 2) * qw
        parent.pixels[y0 : y0 + qh, x0 : x0 + qw] = quadrant
        parent.remaining -= 1
        if parent.remaining:
            return None
        del parents[key]
        return parent.pixels

    def _report(self, final: bool = False) -> None:
        if self.progress is None:
            return
        now = time.monotonic()
        if not final and now - self._last_report < 0.1 and self.done < self.total:
            return
        self._last_report = now
        phase = "published" if final else "tiles"
        self.progress(
            Progress(self.done, self.total, self.skipped, now - self.started, phase=phase)
        )

    def _level0_batch(self, tiles: list[tuple[int, int]]) -> list[_Result]:
        return [self._level0_task(col, row) for col, row in tiles]

    def _reduced_batch(self, tiles: list[tuple[int, int, int, RGB]]) -> list[_Result]:
        return [self._reduced_task(*tile) for tile in tiles]

    def run(
        self,
        *,
        cols: range | None = None,
        export_level: int | None = None,
        seeds: Sequence[_Result] = (),
    ) -> None:
        """Drive the pool. Work goes out in batches of tiles so the main thread (and the GIL
        handoff) wakes once per batch, not once per tile: on a loaded machine every wake-up
        costs a scheduler slice, and per-tile futures left the workers idle.

        ``cols`` limits level 0 to a band of columns; quadrants of ``export_level`` tiles are
        kept in :attr:`exported` instead of feeding parents; ``seeds`` are such quadrants
        from bands built elsewhere (no level-0 work then)."""
        cols0, rows0 = self.grids[0]
        columns = range(cols0) if cols is None else cols
        order: Iterator[tuple[int, int]] = ((c, r) for r in range(rows0) for c in columns)
        max_inflight = 3 * self.workers
        inflight: set[Future[list[_Result]]] = set()
        exhausted = bool(seeds)
        ready: list[tuple[int, int, int, RGB]] = []  # complete parents waiting to be encoded

        def handle(results: Iterable[_Result], count: bool = True) -> None:
            for level, col, row, quadrant in results:
                self.done += count
                if quadrant is None:
                    continue
                if level == export_level:
                    self.exported.append((level, col, row, quadrant))
                    continue
                parent = self._give_quadrant(level, col, row, quadrant)
                if parent is not None:
                    ready.append((level + 1, col // 2, row // 2, parent))

        handle(seeds, count=False)
        with ThreadPoolExecutor(self.workers, thread_name_prefix="iain-tile") as pool:
            try:
                while True:
                    while ready and len(inflight) < max_inflight + 1:
                        batch, ready = ready[:_BATCH], ready[_BATCH:]
                        inflight.add(pool.submit(self._reduced_batch, batch))
                    while not exhausted and len(inflight) < max_inflight:
                        batch0 = list(itertools.islice(order, _BATCH))
                        if not batch0:
                            exhausted = True
                            break
                        inflight.add(pool.submit(self._level0_batch, batch0))
                    if not inflight:
                        if ready:
                            continue
                        break
                    finished, inflight = wait(inflight, return_when=FIRST_COMPLETED)
                    for future in finished:
                        handle(future.result())
                    self._report()
            except BaseException:
                for future in inflight:
                    future.cancel()
                raise
        if any(self._parents):
            raise RuntimeError("pyramid build ended with incomplete parent tiles")  # a bug


# ---------------------------------------------------------------------------- worker processes

BAND_LEVELS = 3  # a band is 2**3 = 8 level-0 tile columns: levels 0..3 are built inside it


@dataclass(frozen=True, slots=True)
class _BandJob:
    path: str
    partial: str
    spec: PyramidSpec
    copy: bool
    quality: int
    subsampling: str
    optimize: bool
    first_col: int
    end_col: int
    steps: tuple[float, ...] | None
    redo: frozenset[int]


def _die_with_parent() -> None:
    """Pool initializer: a kill -9 of the converter must not leave bands writing on."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is not None:
        pr_set_pdeathsig = 1
        ctypes.CDLL(libc_name).prctl(pr_set_pdeathsig, signal.SIGKILL)


def _run_band(job: _BandJob) -> tuple[list[_Result], int, int, list[int]]:
    """Levels 0..BAND_LEVELS of one column band, in its own process (own GIL, own reader)."""
    from wsi import open_slide

    reader = open_slide(Path(job.path))
    try:
        builder = _Builder(
            reader,
            LocalSink(Path(job.partial)),
            job.spec,
            copy_level0=job.copy,
            quality=job.quality,
            subsampling=job.subsampling,
            optimize=job.optimize,
            workers=1,
            progress=None,
            steps=job.steps,
            redo=job.redo,
        )
        builder.run(cols=range(job.first_col, job.end_col), export_level=BAND_LEVELS)
        return builder.exported, builder.done, builder.skipped, builder.sse
    finally:
        reader.close()


def _run_bands(
    builder: _Builder, reader: SlideReader, partial: Path, workers: int
) -> list[_Result]:
    """Build the pyramid with one process per core: bands below, threads for the top levels.

    Python threads share one GIL; on a busy machine a preempted thread holding it stalls the
    others, so a threaded build got ~15 % of a core where C converters got 40-100 %.
    Processes do not share it. Band quadrants of level BAND_LEVELS (1/64 of the level-0 area,
    a few MB even for large slides) come back to this process, which builds the rest; they are
    returned so that top levels can be rebuilt alone.
    """
    spec = builder.spec
    cols0 = builder.grids[0][0]
    width = 2**BAND_LEVELS
    jobs = [
        _BandJob(
            str(reader.path),
            str(partial),
            spec,
            builder.copy,
            builder.quality,
            builder.subsampling,
            builder.optimize,
            first,
            min(first + width, cols0),
            None if builder.steps is None else tuple(builder.steps),
            builder.redo,
        )
        for first in range(0, cols0, width)
    ]
    seeds: list[_Result] = []
    # fork: spawn would re-run the caller's __main__; the child only opens its own reader
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_die_with_parent) as pool:
        for exported, done, skipped, sse in pool.map(_run_band, jobs):
            seeds.extend(exported)
            builder.done += done
            builder.skipped += skipped
            builder.sse = [a + b for a, b in zip(builder.sse, sse, strict=True)]
            builder._report()
    builder.run(seeds=seeds)
    return seeds


def _bands_apply(reader: SlideReader, spec: PyramidSpec, config: TilingConfig) -> bool:
    """Processes pay ~1 s of start-up; worth it for large slides read by a wsi backend."""
    cols0, rows0 = spec.grid(0)
    return (
        config.worker_count > 1
        and type(reader).__module__.startswith("wsi.")
        and Path(reader.path).exists()
        and cols0 * rows0 >= config.process_min_tiles
        and cols0 > 2**BAND_LEVELS
        and spec.level_count > BAND_LEVELS + 1
    )


# ---------------------------------------------------------------------------- entry point


def _check_geometry(reader: SlideReader) -> tuple[int, int]:
    try:
        width, height = reader.level_dimensions[0]
    except (IndexError, TypeError, ValueError) as exc:
        raise SourceReadError(f"slide reports no level 0 ({exc})") from exc
    if width <= 0 or height <= 0:
        raise SourceReadError(f"slide level 0 is {width}x{height}")
    if width > MAX_SIDE_PX or height > MAX_SIDE_PX or width * height > MAX_LEVEL0_PIXELS:
        raise SourceReadError(f"slide level 0 is {width}x{height}, beyond the accepted size")
    return width, height


def _level0_tiling(
    reader: SlideReader, width: int, height: int, config: TilingConfig
) -> tuple[int, int, bool]:
    """(tile_width, tile_height, copy): copy when level 0 is stored as whole-grid JPEG tiles."""
    stored = reader.stored_tiling(0)
    if (
        stored is not None
        and stored.compression == "jpeg"
        and stored.tile_width % 2 == 0  # halves must be whole pixels (DICOM uses 500 px)
        and stored.tile_height % 2 == 0
        and 16 <= stored.tile_width <= 4096
        and 16 <= stored.tile_height <= 4096
        and stored.columns == math.ceil(width / stored.tile_width)
        and stored.rows == math.ceil(height / stored.tile_height)
    ):
        return stored.tile_width, stored.tile_height, True
    return config.tile_size, config.tile_size, False


def _associated(reader: SlideReader) -> dict[str, np.ndarray]:
    images: dict[str, np.ndarray] = {}
    for name in reader.associated_images:
        try:
            pixels = np.ascontiguousarray(reader.read_associated(name)[:, :, :3], dtype=np.uint8)
        except SlideError as exc:
            logger.warning("associated image %s unreadable, not copied: %s", name, exc)
            continue
        images[name] = pixels
    return images


def build_pyramid(
    reader: SlideReader,
    out: str | Path,
    *,
    config: TilingConfig | None = None,
    progress: ProgressCallback | None = None,
    overwrite: bool = False,
    mpp: Mpp | None = None,
) -> PyramidSpec:
    """Convert ``reader``'s slide to an IAIN pyramid at ``out`` (a directory or an s3:// URL).

    ``mpp`` overrides the reader's microns per pixel. Returns the written pyramid's geometry.
    Raises :class:`OutputExistsError` when OUT exists and ``overwrite`` is False, and
    :class:`SourceReadError` when the slide fails mid-way (nothing is left at OUT then).
    """
    config = config or TilingConfig()
    width, height = _check_geometry(reader)
    tile_w, tile_h, copy = _level0_tiling(reader, width, height, config)
    slide_mpp = mpp or reader.mpp
    spec = PyramidSpec(width, height, tile_w, tile_h, slide_mpp.x, slide_mpp.y)
    sha, size = source_digest(Path(reader.path))
    params = {
        "source_sha256": sha,
        "tile": [tile_w, tile_h],
        "quality": config.quality,
        "subsampling": config.subsampling,
        "copy": copy,
        "min_psnr": config.min_psnr,
        "converter": CONVERTER_VERSION,
    }
    out_str = str(out)
    is_s3 = out_str.startswith("s3://")
    name = Path(reader.path).name
    if name.endswith(".dcm") and Path(reader.path).parent.name:
        name = Path(reader.path).parent.name
    info: dict[str, Any] = {
        "name": name,
        "vendor": reader.vendor,
        "backend": reader.backend,
        "width": width,
        "height": height,
        "tile_width": tile_w,
        "tile_height": tile_h,
        "mpp": {"x": slide_mpp.x, "y": slide_mpp.y, "source": str(slide_mpp.source)},
        "objective_power": reader.objective_power,
        "source_sha256": sha,
        "source_size": size,
        "level0": "copied" if copy else "re-encoded",
        "quality": config.quality,
        "subsampling": config.subsampling,
        "converter_version": CONVERTER_VERSION,
    }

    if is_s3:
        sink: LocalSink | StoreSink = _open_s3(out_str.rstrip("/"), config)
        partial: Path | None = None
        target: Path | None = None
        marker = sink.read(BUILD_MARKER)
        if sink.exists(ROOT_KEY) and marker is None:
            if not overwrite:
                raise OutputExistsError(f"{out_str} already holds a pyramid (use --overwrite)")
            sink.clear()
        elif marker is not None and json.loads(marker) != params:
            sink.clear()
        elif sink.exists(ROOT_KEY):
            sink.remove(ROOT_KEY)
    else:
        target = Path(out_str)
        if target.exists() and not overwrite:
            raise OutputExistsError(f"{target} exists (use --overwrite to replace it)")
        if not target.parent.is_dir():
            raise InvalidOutputError(f"{target.parent} is not a directory")
        partial = target.with_name(f"{target.name}.partial-{sha[:12]}")
        sink = LocalSink(partial)
        marker = sink.read(BUILD_MARKER)
        if partial.exists() and (marker is None or json.loads(marker) != params):
            logger.info("discarding a partial output built from other settings")
            sink.clear()
        partial.mkdir(exist_ok=True)
        if marker is not None:  # a killed run may have left half-written temp files
            for stale in partial.rglob("*.tmp-*"):
                stale.unlink(missing_ok=True)
    resumed = marker is not None
    sink.write(BUILD_MARKER, json.dumps(params).encode())
    logger.info(
        "converting %dx%d, %d levels, tile %dx%d, level 0 %s%s",
        width,
        height,
        spec.level_count,
        tile_w,
        tile_h,
        "copied" if copy else "re-encoded",
        " (resuming)" if resumed else "",
    )

    def make_builder(
        steps: Sequence[float] | None, redo: frozenset[int], report: bool = False
    ) -> _Builder:
        return _Builder(
            reader,
            sink,
            spec,
            copy_level0=copy,
            quality=config.quality,
            subsampling=config.subsampling,
            optimize=config.optimize_huffman,
            workers=config.worker_count,
            progress=progress if report else None,
            steps=steps,
            redo=redo,
        )

    first = builder = make_builder(None, frozenset(), report=True)
    try:
        documents = pyramid_documents(
            spec,
            name=name,
            quality=config.quality,
            subsampling=config.subsampling,
            info=info,
            icc_profile=reader.icc_profile,
            associated=_associated(reader),
        )
        for key, data in documents.items():
            if key != ROOT_KEY:
                sink.write(key, data)
        if partial is not None and (partial / ASSOCIATED_GROUP).is_dir():
            os.chmod(partial / ASSOCIATED_GROUP, 0o700)
        measured = config.min_psnr > 0 and spec.level_count > 1
        if measured:
            saved = sink.read(STEPS_KEY) if resumed else None
            builder.steps = saved_steps(saved, spec.level_count)
            if builder.steps is None:  # a resumed build keeps its steps: no second sample
                builder.steps = choose_steps(builder.sample_patches(SAMPLE_TILES), config.min_psnr)
                sink.write(STEPS_KEY, json.dumps(builder.steps).encode())
            logger.info("reduced levels: flat steps %s", builder.steps[1:])
        band_dir = partial if partial is not None and _bands_apply(reader, spec, config) else None
        bands = band_dir is not None
        seeds = _run_bands(builder, reader, band_dir, config.worker_count) if band_dir else []
        if band_dir is None:
            builder.run()
        for _ in range(MAX_REPAIRS if measured else 0):
            psnr = builder.level_psnr()
            steps = builder.steps or []
            failing = frozenset(
                k for k in range(1, spec.level_count) if psnr[k] < config.min_psnr and steps[k] > 1
            )
            if not failing:
                break
            logger.info(
                "levels %s measured below %.1f dB: re-encoding them finer",
                sorted(failing),
                config.min_psnr,
            )
            previous = builder
            builder = make_builder(finer_steps(steps, psnr, failing, config.min_psnr), failing)
            sink.write(STEPS_KEY, json.dumps(builder.steps).encode())
            if bands and min(failing) > BAND_LEVELS:  # rebuilt from the bands' quadrants alone
                builder.sse[: BAND_LEVELS + 1] = previous.sse[: BAND_LEVELS + 1]
                builder.run(seeds=seeds)
            elif band_dir is not None:
                seeds = _run_bands(builder, reader, band_dir, config.worker_count)
            else:
                builder.run()
        if measured:
            info["reduced_levels"] = measured_info(
                builder.steps or [], builder.level_psnr(), config.min_psnr
            )
            documents[ROOT_KEY] = root_document(
                spec, name=name, info=info, icc_profile=reader.icc_profile
            )
        sink.write(ROOT_KEY, documents[ROOT_KEY])
        sink.remove(BUILD_MARKER)
        sink.remove(STEPS_KEY)
    except (SlideError, SourceReadError) as exc:
        # the same bytes would fail again: nothing to resume, leave nothing behind
        sink.clear()
        if isinstance(exc, SourceReadError):
            raise
        raise SourceReadError(f"{type(exc).__name__}: {exc}") from exc
    if partial is not None and target is not None:
        publish_local(partial, target)
    first._report(final=True)
    logger.info(
        "converted %d tiles (%d already present) in %.1f s",
        first.done,
        first.skipped,
        time.monotonic() - first.started,
    )
    return replace(spec)

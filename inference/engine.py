"""The batch segmentation engine: slide store in, label pyramid and outlines out.

Geometry (why the result has no seams): work units are chunk-aligned blocks of the output,
so a kill, a resume or a dask task never shares a chunk with another. Inside a unit, the fewest
patches of ``tile_size_px`` whose cores (at most ``tile - overlap`` px) tile the unit are spread
evenly; each patch sees at least ``overlap / 2`` px of real context beyond its core, across unit
edges too (read from the neighbouring chunks), so a network's padding artefacts never reach the
output; neighbouring cores inside a unit are blended over a linear ramp ``overlap / 2`` wide
(weights sum to one), and every patch is run exactly once.

Scheduling (``EngineOptions.schedule``): reading decodes stored JPEG chunks (``io``: host,
libjpeg-turbo in a thread pool, on CPU; device, ``torchvision.io.decode_jpeg`` batches, on CUDA;
the device path also runs on CPU, where the tests cover it); the caller's thread
normalises, batches patches across units, runs the model and blends each patch into its unit's
accumulator; a finished unit is argmaxed and written (with the label pyramid's share of it,
``_output.py``) and fed to the outline tracer.
- ``lockstep`` (CPU default): the model's threads already fill every core, and any thread
  beside them slowed it by more than the work it did (pipeline / bare 0.65 with threads, 0.75
  in lockstep, the same slower model). So nothing runs while the model runs: between forward
  passes a finished unit is written (one thread, its probabilities in the decode pool) and
  traced (another) while this thread reads the next unit, and all of it is settled before the
  model runs again.
- ``threads`` (CUDA default): a producer thread and a writer thread beside the model, bounded
  queues between them; on CPU at the lowest thread priority (``_cpu.py``).
Memory is bounded by the units in flight, not by the slide size.

CPU: the model runs channels_last with its batch norms folded (``models.fold``); the
accumulator holds ``255 * probability + 0.5`` (blend weights pre-scaled, weights summing to one
by construction, so no weight sum and no division), which becomes the stored uint8 in one cast;
batch, probability and accumulator buffers are reused, never re-faulted per unit.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor, wait
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from scipy import ndimage

from inference._chunks import ChunkCache, Decoded
from inference._cpu import BufferPool, argmax_first, argmax_first_tensor, lower_thread_priority
from inference._memory import pin_mmap_threshold
from inference._output import LabelWriter
from inference._pyramid import SlidePyramid, decode_jpeg
from inference._trace import UnitFeed
from inference.errors import (
    DeviceUnavailableError,
    InferenceCancelledError,
    InferenceError,
    InvalidRequestError,
    InvalidStoreError,
)
from inference.outlines import MAX_TRACE_PIXELS, RowTracer, mask_to_features, write_geojson
from inference.plan import EngineOptions, Plan, Unit, blend_ramp, make_plan
from inference.spec import Model, ModelSpec

__all__ = [
    "Engine",
    "EngineOptions",  # re-exported from inference.plan (callers import them from here)
    "Plan",
    "Progress",
    "RunResult",
    "make_plan",
    "resolve_device",
    "tissue_mask",
]

logger = logging.getLogger(__name__)

TISSUE_MAX_SIDE = 2048  # tissue detection reads the finest level no larger than this


def resolve_device(name: str) -> torch.device:
    """``cpu`` / ``cuda`` / ``cuda:1`` -> a device, refusing CUDA where there is none."""
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise InvalidRequestError(f"unknown device {name!r}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailableError(f"device {name!r} requested but no CUDA device is available")
    if device.type not in ("cpu", "cuda"):
        raise InvalidRequestError(f"device {name!r}: only cpu and cuda are supported")
    return device


def tissue_mask(rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.bool_]:
    """Tissue = coloured or mid-grey pixels; bright glass and black fluorescence background are not.

    Saturation (max - min) catches stained tissue (H&E, stained nuclei on black); the brightness
    floor rejects the black background of fluorescence slides, the ceiling white glass. An
    opening removes sensor-noise specks, a dilation keeps the tissue edge.
    """
    channels = rgb.astype(np.int16)
    high = channels.max(axis=2)
    low = channels.min(axis=2)
    mean = channels.mean(axis=2)
    tissue = ((high - low >= 18) | (mean < 200)) & (high >= 40)
    tissue = ndimage.binary_opening(tissue, iterations=1)
    return np.asarray(ndimage.binary_dilation(tissue, iterations=2), dtype=np.bool_)


@dataclass(frozen=True, slots=True)
class _Patch:
    """A patch in its unit's window: offset (x, y) of its input; the part of it that counts,
    (sx, sy) in the patch, landing at (ax, ay) in the unit's accumulator; and that part's blend
    weights x 255 (a view of weights shared between patches of the same shape)."""

    x: int
    y: int
    ax: int
    ay: int
    sx: int
    sy: int
    weight: torch.Tensor


@dataclass(frozen=True, slots=True)
class Progress:
    """What a progress bar or job record shows."""

    units_done: int
    units_total: int
    patches_run: int
    patches_skipped: int
    elapsed_s: float

    @property
    def patches_per_s(self) -> float:
        return self.patches_run / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass(frozen=True, slots=True)
class RunResult:
    """Summary of one slide's run."""

    labels_dir: Path
    geojson: Path | None
    level: int
    scale: float
    units_total: int
    units_resumed: int
    patches_run: int
    patches_skipped: int
    seconds: float
    features: int
    already_complete: bool = False  # a previous run finished: nothing was recomputed

    @property
    def skipped_share(self) -> float:
        total = self.patches_run + self.patches_skipped
        return self.patches_skipped / total if total else 0.0


@dataclass
class _Work:
    """One unit in flight: its input window on the device and the blend accumulator."""

    unit: Unit
    origin: tuple[int, int]  # model-pixel (x, y) of the window's top-left
    window: torch.Tensor | None  # (3, H, W) uint8 on the device; None when all glass
    patches: list[_Patch]  # patches that need the model
    glass: list[_Patch]  # patches skipped as glass: certain background
    acc: torch.Tensor | None = None  # (classes, h, w) 255 * probability + 0.5, model pixels
    out: torch.Tensor | None = None  # the same at level pixels (acc itself unless resampled)
    pending: int = 0


class Engine:
    """Runs one loaded model over slide stores; the model is loaded once, by the caller.

    One run at a time: buffers (batch, accumulator, decoded chunks) are reused between units,
    so threads each need their own Engine (``inference.distributed`` keeps one per thread)."""

    def __init__(
        self,
        model: Model | torch.nn.Module,
        spec: ModelSpec,
        device: torch.device | str = "cpu",
        options: EngineOptions | None = None,
    ) -> None:
        self.spec = spec
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.options = options or EngineOptions()
        self.cuda = self.device.type == "cuda"
        # decode, paste and reduce on the device (CUDA), or on the host (numpy, threads)
        self.device_io = self.options.io == "device" or (self.options.io == "auto" and self.cuda)
        pin_mmap_threshold()  # peak RSS set by the units in flight, not the slide size
        if isinstance(model, torch.nn.Module):  # channels_last: depthwise convolutions run
            # ~1.6x faster on CPU (oneDNN) and use tensor cores on CUDA
            model = model.to(self.device).eval()
            try:
                model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            except RuntimeError:  # 5-D parameters: the model keeps its layout
                logger.debug("model kept its memory layout")
        self.model: Model = model
        self._mean = torch.tensor(spec.mean, device=self.device).view(3, 1, 1) * 255
        self._std = torch.tensor(spec.std, device=self.device).view(3, 1, 1) * 255
        self._ramps: dict[tuple[int, bool, bool], torch.Tensor] = {}
        self._weights: dict[tuple[int, bool, bool, int, bool, bool], torch.Tensor] = {}
        schedule = self.options.schedule
        # lockstep on CPU: torch's threads already fill every core, and a reader or writer
        # beside them slows the model by more than the work it does (benchmarks/RESULTS.md)
        self.lockstep = schedule == "lockstep" or (schedule == "auto" and not self.cuda)
        self._background = self.options.background_io and not self.cuda and not self.lockstep
        self._pool = ThreadPoolExecutor(
            self.options.decode_threads,
            thread_name_prefix="decode",
            initializer=lower_thread_priority if self._background else None,
        )
        self._spans: dict[tuple[int, bool, bool], tuple[int, int]] = {}
        # lockstep: a finished unit's writing and its outline tracing, beside the next read
        self._writes = ThreadPoolExecutor(1, thread_name_prefix="infer-write")
        self._traces = ThreadPoolExecutor(1, thread_name_prefix="infer-trace")
        self.chunks = ChunkCache()  # the producer's decoded chunks (host or device)
        self._run_lock = threading.Lock()
        self._accs = BufferPool(self.device)
        self._batch_in: torch.Tensor | None = None  # (batch, 3, tile, tile) float, reused
        self._batch_probs: torch.Tensor | None = None

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._writes.shutdown(wait=True)
        self._traces.shutdown(wait=True)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ public
    def run(
        self,
        store: Path,
        progress: Callable[[Progress], None] | None = None,
        cancel: threading.Event | None = None,
        only_units: Sequence[int] | None = None,
        finish: bool = True,
    ) -> RunResult:
        """Segment one slide store; resumes a previous run with the same parameters.

        ``only_units`` restricts the run to some work units (a distributed region task);
        ``finish`` builds the mask pyramid and outlines once every unit is written.
        """
        with self._run_lock:  # buffers are reused between units: one run at a time
            return self._run(store, progress, cancel, only_units, finish)

    def _run(
        self,
        store: Path,
        progress: Callable[[Progress], None] | None,
        cancel: threading.Event | None,
        only_units: Sequence[int] | None,
        finish: bool,
    ) -> RunResult:
        started = time.perf_counter()
        pyramid = SlidePyramid(Path(store))
        plan = make_plan(pyramid, self.spec, self.options)
        writer = self.label_writer(pyramid, plan)
        done = writer.prepare()
        units = plan.units()
        if done == {-1}:
            logger.info("%s: labels %s already complete", pyramid.root.name, self.spec.name)
            return RunResult(
                writer.group_dir, writer.group_dir.with_suffix(".geojson"), plan.level,
                plan.scale, len(units), len(units), 0, 0, 0.0, 0, already_complete=True,
            )  # fmt: skip
        wanted = set(only_units) if only_units is not None else None
        todo = [u for u in units if u.index not in done and (wanted is None or u.index in wanted)]
        logger.info(
            "%s: level %d (%.3f µm/px, scale %.3f), %d units, %d to do",
            pyramid.root.name, plan.level, plan.level_mpp, plan.scale, len(units), len(todo),
        )  # fmt: skip
        tissue, tissue_scale = self._tissue(pyramid, plan)
        # a whole run traces outlines as unit rows finish; a resumed or partial one at the end
        feed = self._unit_feed(pyramid, plan) if finish and wanted is None and not done else None
        counts = self._process(pyramid, plan, writer, todo, tissue, tissue_scale, progress, cancel,
                               len(units), len(units) - len(todo), feed)  # fmt: skip
        geojson: Path | None = None
        features = 0
        if finish and (wanted is None or not self.pending_units(store)):
            writer.finish()
            tracer = feed.tracer if feed is not None else None
            geojson, features = self.write_outlines(pyramid, plan, writer, tracer)
        seconds = time.perf_counter() - started
        return RunResult(
            writer.group_dir, geojson, plan.level, plan.scale, len(units),
            len(units) - len(todo), counts[0], counts[1], seconds, features,
        )  # fmt: skip

    def label_writer(self, pyramid: SlidePyramid, plan: Plan) -> LabelWriter:
        sizes = [(info.width, info.height) for info in pyramid.levels]
        return LabelWriter(
            pyramid.root, self.spec, sizes, (plan.chunk_w, plan.chunk_h), plan.level,
            plan.slide_mpp, plan.fingerprint(self.spec), plan.unit_px,
        )  # fmt: skip

    def pending_units(self, store: Path) -> list[int]:
        """Units of ``store`` not yet written (prepares the label group if needed)."""
        pyramid = SlidePyramid(Path(store))
        plan = make_plan(pyramid, self.spec, self.options)
        done = self.label_writer(pyramid, plan).prepare()
        if done == {-1}:
            return []
        return [u.index for u in plan.units() if u.index not in done]

    # ------------------------------------------------------------------ tissue
    def _tissue(
        self, pyramid: SlidePyramid, plan: Plan
    ) -> tuple[npt.NDArray[np.bool_] | None, float]:
        """Tissue mask on a low level, and tissue pixels per inference-level pixel."""
        if not self.options.skip_glass:
            return None, 1.0
        level = next(
            (k for k, info in enumerate(pyramid.levels)
             if k >= plan.level and max(info.width, info.height) <= TISSUE_MAX_SIDE),
            len(pyramid.levels) - 1,
        )  # fmt: skip
        info = pyramid.levels[level]
        rgb = pyramid.read_region(level, 0, 0, info.width, info.height)
        mask = tissue_mask(rgb)
        logger.info("tissue: %.1f %% of level %d", 100 * mask.mean(), level)
        return mask, info.width / plan.width

    def _has_tissue(
        self, tissue: npt.NDArray[np.bool_] | None, scale: float, plan: Plan,
        mx0: int, my0: int, mx1: int, my1: int,
    ) -> bool:  # fmt: skip
        if tissue is None:
            return True
        f = scale / plan.scale  # tissue px per model px
        tx0, ty0 = max(0, math.floor(mx0 * f)), max(0, math.floor(my0 * f))
        tx1, ty1 = math.ceil(mx1 * f), math.ceil(my1 * f)
        return bool(tissue[ty0:ty1, tx0:tx1].any())

    # ------------------------------------------------------------------ reading
    def _read_window(
        self, pyramid: SlidePyramid, plan: Plan, mx: int, my: int, mw: int, mh: int,
        keep_from: int | None = None,
    ) -> torch.Tensor:  # fmt: skip
        """Model-scale (3, mh, mw) uint8 window at model pixel (mx, my), on the device;
        ``keep_from``: the first level row a later window reads (see ``ChunkCache``)."""
        s = plan.scale
        lx0, ly0 = math.floor(mx / s), math.floor(my / s)
        lx1, ly1 = math.ceil((mx + mw) / s), math.ceil((my + mh) / s)
        region = self._read_level(pyramid, plan.level, lx0, ly0, lx1 - lx0, ly1 - ly0, keep_from)
        if s == 1.0:
            return region
        out_h, out_w = round((ly1 - ly0) * s), round((lx1 - lx0) * s)
        resized = F.interpolate(
            region[None].float(), size=(out_h, out_w), mode="bilinear",
            antialias=s < 1, align_corners=False,
        )[0]  # fmt: skip
        ox, oy = round((mx / s - lx0) * s), round((my / s - ly0) * s)
        crop = resized[:, oy : oy + mh, ox : ox + mw]
        if crop.shape[1:] != (mh, mw):  # rounding left a pixel short: pad with glass
            crop = F.pad(crop, (0, mw - crop.shape[2], 0, mh - crop.shape[1]), value=255.0)
        return crop.round().clamp(0, 255).to(torch.uint8)

    def _read_level(
        self, pyramid: SlidePyramid, level: int, x: int, y: int, width: int, height: int,
        keep_from: int | None = None,
    ) -> torch.Tensor:  # fmt: skip
        """(3, height, width) uint8 pixels of ``level`` at (x, y), through the chunk cache:
        decoded on the host (numpy) or on the device (one batch per window's new chunks)."""
        info = pyramid.levels[level]

        def load(key: tuple[int, int]) -> npt.NDArray[np.uint8] | None:
            blob = pyramid.read_chunk_bytes(level, *key)
            return None if blob is None else self._decode_chunk(pyramid, level, key, blob)

        def decode(keys: Sequence[tuple[int, int]]) -> list[Decoded]:
            if not self.device_io:
                return list(self._pool.map(load, keys))
            blobs = list(self._pool.map(lambda k: pyramid.read_chunk_bytes(level, *k), keys))
            present = [(k, b) for k, b in zip(keys, blobs, strict=True) if b is not None]
            tiles = iter(self._decode_on_device(pyramid, level, present) if present else [])
            return [None if blob is None else next(tiles) for blob in blobs]

        def white(h: int, w: int) -> torch.Tensor:
            return torch.full((h, w, 3), 255, dtype=torch.uint8, device=self.device)

        out = self.chunks.window(
            level, (info.tile_width, info.tile_height), info.grid, (x, y, width, height),
            keep_from, decode, white if self.device_io else None,
        )  # fmt: skip
        return (out if isinstance(out, torch.Tensor) else torch.from_numpy(out)).permute(2, 0, 1)

    @staticmethod
    def _decode_chunk(
        pyramid: SlidePyramid, level: int, key: tuple[int, int], blob: bytes
    ) -> npt.NDArray[np.uint8]:
        """libjpeg-turbo; a chunk that does not decode is named (store, level, tile)."""
        try:
            return decode_jpeg(blob)
        except InvalidStoreError as exc:
            name = f"{pyramid.root.name}: level {level} tile ({key[0]}, {key[1]})"
            raise InvalidStoreError(f"{name}: {exc}") from exc

    def _decode_on_device(
        self, pyramid: SlidePyramid, level: int, present: list[tuple[tuple[int, int], bytes]]
    ) -> list[torch.Tensor]:
        """(h, w, 3) uint8 tensor views on the device: one nvJPEG batch on CUDA; elsewhere
        libjpeg-turbo in the pool (a CUDA-built torchvision may not even import beside a CPU
        torch), so that the rest of the device path runs on CPU too. When nvJPEG refuses a
        batch, libjpeg-turbo names the bad chunk, or decodes the batch if none is bad."""

        def on_host() -> list[torch.Tensor]:
            decoded = self._pool.map(lambda kb: self._decode_chunk(pyramid, level, *kb), present)
            return [torch.from_numpy(rgb).to(self.device) for rgb in decoded]

        if not self.cuda:
            return on_host()
        from torchvision.io import decode_jpeg as tv_decode  # CUDA build only: import lazily

        datas = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for _, b in present]
        try:
            return [tile.permute(1, 2, 0) for tile in tv_decode(datas, device=self.device)]
        except RuntimeError as exc:
            logger.warning(
                "nvJPEG refused level %d chunks (%s): decoding them on the host", level, exc
            )
            return on_host()

    def ramp(self, core: int, first: bool, last: bool) -> torch.Tensor:
        """Cached 1-D blend weights on the device (few distinct core widths per slide)."""
        key = (core, first, last)
        if key not in self._ramps:
            tile, blend = self.spec.tile_size_px, self.spec.overlap_px // 2
            ramp = blend_ramp(tile, core, blend, first, last)
            self._ramps[key] = torch.from_numpy(ramp).to(self.device)
        return self._ramps[key]

    def patch_weight(
        self, core_x: int, first_x: bool, last_x: bool, core_y: int, first_y: bool, last_y: bool
    ) -> torch.Tensor:
        """Cached 2-D blend weights: a handful of distinct shapes per slide."""
        key = (core_x, first_x, last_x, core_y, first_y, last_y)
        if key not in self._weights:
            ramp_x = self.ramp(core_x, first_x, last_x)
            ramp_y = self.ramp(core_y, first_y, last_y)
            self._weights[key] = ramp_y[:, None] * ramp_x[None, :]
        return self._weights[key]

    def _span(self, core: int, first: bool, last: bool) -> tuple[int, int]:
        """[start, stop) of a ramp's non-zero weights."""
        key = (core, first, last)
        if key not in self._spans:
            tile, blend = self.spec.tile_size_px, self.spec.overlap_px // 2
            nonzero = np.flatnonzero(blend_ramp(tile, core, blend, first, last))
            self._spans[key] = (int(nonzero[0]), int(nonzero[-1]) + 1)
        return self._spans[key]

    def _scaled_weight(
        self, core_x: int, first_x: bool, last_x: bool, core_y: int, first_y: bool, last_y: bool
    ) -> torch.Tensor:
        """``patch_weight`` x 255: the accumulator holds uint8-scaled probabilities."""
        key = (-core_x, first_x, last_x, core_y, first_y, last_y)  # beside patch_weight's keys
        if key not in self._weights:
            weight = self.patch_weight(core_x, first_x, last_x, core_y, first_y, last_y)
            self._weights[key] = weight * 255
        return self._weights[key]

    def _produce(
        self, pyramid: SlidePyramid, plan: Plan, units: list[Unit],
        tissue: npt.NDArray[np.bool_] | None, tissue_scale: float,
    ) -> Iterator[_Work]:  # fmt: skip
        """Read, decode and resample one unit's window at a time (runs in the producer); the
        unit's patches split into those with tissue and glass."""
        tile = plan.tile
        pad = tile // 2 + 1  # the most any patch reaches past its unit
        reach = plan.halo // 2 + 1  # half the blend ramp
        stream = None
        self.chunks.clear()  # another slide: nothing to reuse
        if self.cuda:  # decode and resample on a side stream, beside the model's
            stream = torch.cuda.Stream(self.device)  # type: ignore[no-untyped-call]
        for unit in units:
            mx0, my0, mx1, my1 = plan.model_rect(unit)
            cols, rows = plan.unit_cores(mx0, mx1), plan.unit_cores(my0, my1)
            origin = (mx0 - pad, my0 - pad)
            patches, glass = [], []
            for j, (cy, ch) in enumerate(rows):
                for i, (cx, cw) in enumerate(cols):
                    edges = (i == 0, i == len(cols) - 1, j == 0, j == len(rows) - 1)
                    patch = self._patch(
                        cx - (tile - cw) // 2, cy - (tile - ch) // 2, cw, ch, edges,
                        (mx0, my0, mx1, my1), origin,
                    )  # fmt: skip
                    # glass where the patch has any weight: a skipped patch never blends its
                    # certain background into a neighbour's tissue
                    if self._has_tissue(tissue, tissue_scale, plan, cx - reach, cy - reach,
                                        cx + cw + reach, cy + ch + reach):  # fmt: skip
                        patches.append(patch)
                    else:
                        glass.append(patch)
            window = None
            if patches:
                width, height = mx1 - mx0 + 2 * pad, my1 - my0 + 2 * pad
                # the level row the unit row below starts reading at (kept in the chunk cache)
                below = math.floor((math.floor(unit.y1 * plan.scale) - pad) / plan.scale)
                keep = below if unit.y1 < plan.height else None
                with torch.cuda.stream(stream) if stream is not None else nullcontext():
                    window = self._read_window(pyramid, plan, *origin, width, height, keep)
                if stream is not None:
                    stream.synchronize()
                    # allocated on the side stream, read by the model's: without this the
                    # caching allocator could hand its memory to the next window while the
                    # model's stream is still copying patches out of it
                    window.record_stream(torch.cuda.default_stream(self.device))
            work = _Work(unit, origin, window, patches, glass)
            work.pending = len(patches)
            yield work
        self.chunks.clear()

    def _patch(
        self, px: int, py: int, cw: int, ch: int, edges: tuple[bool, bool, bool, bool],
        rect: tuple[int, int, int, int], origin: tuple[int, int],
    ) -> _Patch:  # fmt: skip
        """The patch with input at model pixel (px, py), cropped to where its weight is non-zero
        inside the unit's rect: the unit's own pixels are all it contributes."""
        first_x, last_x, first_y, last_y = edges
        full = self._scaled_weight(cw, first_x, last_x, ch, first_y, last_y)
        tile = self.spec.tile_size_px
        span_x, span_y = self._span(cw, first_x, last_x), self._span(ch, first_y, last_y)
        mx0, my0, mx1, my1 = rect
        x0, x1 = max(px + span_x[0], mx0), min(px + span_x[1], mx1, px + tile)
        y0, y1 = max(py + span_y[0], my0), min(py + span_y[1], my1, py + tile)
        return _Patch(
            px - origin[0], py - origin[1], x0 - mx0, y0 - my0, x0 - px, y0 - py,
            full[y0 - py : y1 - py, x0 - px : x1 - px],
        )  # fmt: skip

    def normalise(self, batch: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) pixels on the device -> the model's normalised float input: a float
        batch in place (the engine's reused buffer), a uint8 one into one new float tensor.
        Windows stay uint8 until here: a quarter of the memory per unit in flight."""
        batch = batch if batch.is_floating_point() else batch.float()
        return batch.sub_(self._mean).div_(self._std)

    # ------------------------------------------------------------------ the loop
    def _process(
        self, pyramid: SlidePyramid, plan: Plan, writer: LabelWriter, units: list[Unit],
        tissue: npt.NDArray[np.bool_] | None, tissue_scale: float,
        progress: Callable[[Progress], None] | None, cancel: threading.Event | None,
        units_total: int, units_before: int, feed: UnitFeed | None = None,
    ) -> tuple[int, int]:  # fmt: skip
        finished: list[int] = []

        def finish(work: _Work) -> None:
            mask = self._finish_unit(plan, writer, work)
            if feed is not None:
                feed.add(work.unit.x0, work.unit.y0, mask)
            finished.append(work.unit.index)

        def report(run: int, skipped: int) -> None:
            if progress is not None:
                progress(Progress(units_before + len(finished), units_total, run, skipped,
                                  time.perf_counter() - started))  # fmt: skip

        started = time.perf_counter()
        works = self._produce(pyramid, plan, units, tissue, tissue_scale)
        if not self.lockstep:
            return self._threaded(plan, works, finish, report, cancel)
        # lockstep: a finished unit is written (one thread) and traced (another) while this
        # thread reads the next unit; all of it is settled before the model runs again
        side: list[tuple[int, Future[Any]]] = []

        def hand_over(work: _Work) -> None:
            mask: Future[npt.NDArray[np.uint8]] = Future()

            def write() -> None:
                try:
                    # the decode pool also writes the probabilities: it idles between reads
                    self._finish_unit(plan, writer, work, mask, self._pool)
                except BaseException as exc:
                    if not mask.done():  # the tracer waits on it
                        mask.set_exception(exc)
                    raise

            side.append((work.unit.index, self._writes.submit(write)))
            if feed is not None:  # traced while the unit's chunks are written
                x0, y0 = work.unit.x0, work.unit.y0
                side.append((-1, self._traces.submit(lambda: feed.add(x0, y0, mask.result()))))

        def settle() -> None:
            pending = side[:]
            side.clear()
            wait([future for _, future in pending])  # all done, even when one failed
            for index, future in pending:
                future.result()  # the first error, if any
                if index >= 0:
                    finished.append(index)

        try:
            return self._loop(plan, works, hand_over, report, cancel, settle)
        finally:
            wait([future for _, future in side])  # an error: nothing writes after we return

    def _threaded(
        self, plan: Plan, works: Iterator[_Work], finish: Callable[[_Work], None],
        report: Callable[[int, int], None], cancel: threading.Event | None,
    ) -> tuple[int, int]:  # fmt: skip
        """The loop with a producer thread (reading, decoding) and a writer thread beside it."""
        inbox: queue.Queue[_Work | BaseException | None] = queue.Queue(self.options.prefetch_units)
        outbox: queue.Queue[_Work | None] = queue.Queue(1)
        stop = threading.Event()
        errors: list[BaseException] = []

        def producer() -> None:
            if self._background:
                lower_thread_priority()
            try:
                for work in works:
                    while not stop.is_set():
                        try:
                            inbox.put(work, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
                inbox.put(None)
            except BaseException as exc:  # handed to the caller's thread
                inbox.put(exc)

        def write_loop() -> None:
            if self._background:
                lower_thread_priority()
            while (work := outbox.get()) is not None:
                if errors:
                    continue
                try:
                    finish(work)
                except BaseException as exc:
                    errors.append(exc)

        def received() -> Iterator[_Work | None]:
            while True:
                if errors:
                    raise errors[0]
                try:
                    item = inbox.get(timeout=0.5)
                except queue.Empty:
                    yield None  # the reader is slow: do not hold a partial batch
                    continue
                if isinstance(item, BaseException):
                    raise item
                if item is None:
                    return
                yield item

        threads = [
            threading.Thread(target=producer, name="infer-read", daemon=True),
            threading.Thread(target=write_loop, name="infer-write", daemon=True),
        ]
        for thread in threads:
            thread.start()
        try:
            counts = self._loop(plan, received(), outbox.put, report, cancel)
        finally:
            stop.set()
            outbox.put(None)
            for thread in threads:
                thread.join()
        if errors:
            raise errors[0]
        report(*counts)
        return counts

    def _loop(
        self, plan: Plan, works: Iterator[_Work | None], finish: Callable[[_Work], None],
        report: Callable[[int, int], None], cancel: threading.Event | None,
        settle: Callable[[], None] = lambda: None,
    ) -> tuple[int, int]:  # fmt: skip
        """Batch patches across units, run the model, hand each finished unit to ``finish``;
        ``None`` from ``works`` flushes a partial batch; ``settle`` runs before every forward
        pass and at the end. Returns (patches run, skipped)."""
        run = skipped = 0
        batch: list[tuple[_Work, _Patch]] = []

        def flush(force: bool) -> None:
            nonlocal run
            while len(batch) >= self.options.batch_size or (force and batch):
                take = batch[: self.options.batch_size]
                del batch[: self.options.batch_size]
                settle()
                self._forward(plan, take)
                run += len(take)
                for work in {id(w): w for w, _ in take}.values():
                    if work.pending == 0:
                        finish(work)
                report(run, skipped)

        for work in works:
            if cancel is not None and cancel.is_set():
                raise InferenceCancelledError("inference cancelled")
            if work is None:
                flush(force=True)
                continue
            skipped += len(work.glass)
            self._start_unit(plan, work)
            if work.pending == 0:
                finish(work)
                report(run, skipped)
                continue
            batch.extend((work, patch) for patch in work.patches)
            flush(force=False)
        if cancel is not None and cancel.is_set():
            raise InferenceCancelledError("inference cancelled")
        flush(force=True)
        settle()
        report(run, skipped)
        return run, skipped

    def _start_unit(self, plan: Plan, work: _Work) -> None:
        """The unit's accumulator (0.5: the uint8 cast then rounds); glass patches contribute
        certain background at once."""
        if not work.patches:
            return
        mx0, my0, mx1, my1 = plan.model_rect(work.unit)
        acc = self._accs.take((len(self.spec.classes), my1 - my0, mx1 - mx0))
        acc.fill_(0.5)
        for patch in work.glass:
            height, width = patch.weight.shape
            acc[0, patch.ay : patch.ay + height, patch.ax : patch.ax + width] += patch.weight
        work.acc = acc

    @torch.inference_mode()
    def forward_probs(self, inputs: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Class probabilities of a normalised (N, 3, tile, tile) batch (into ``out`` if given)."""
        tile = inputs.shape[-1]
        inputs = inputs.contiguous(memory_format=torch.channels_last)
        if self.cuda:
            with torch.autocast("cuda", dtype=torch.float16):
                logits = self.model(inputs)
        else:
            logits = self.model(inputs)
        if logits.shape[-2:] != (tile, tile):
            logits = F.interpolate(logits.float(), size=(tile, tile), mode="bilinear")
        if out is None:
            return torch.softmax(logits.float(), dim=1)
        return torch.softmax(logits.float(), dim=1, out=out)

    def _batch_buffers(self, n: int, tile: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The reused (n, 3, tile, tile) input and (n, classes, tile, tile) output buffers."""
        size = self.options.batch_size
        if self._batch_in is None or self._batch_probs is None:
            # NCHW: copying patches in and normalising are 3x faster than in channels_last, and
            # one conversion before the model costs less than the difference
            self._batch_in = torch.empty((size, 3, tile, tile), device=self.device)
            classes = len(self.spec.classes)
            self._batch_probs = torch.empty((size, classes, tile, tile), device=self.device)
        return self._batch_in[:n], self._batch_probs[:n]

    @torch.inference_mode()
    def _forward(self, plan: Plan, take: list[tuple[_Work, _Patch]]) -> None:
        tile = plan.tile
        views = [w.window[:, p.y : p.y + tile, p.x : p.x + tile] for w, p in take]  # type: ignore[index]
        # each patch uint8 -> float straight into the reused batch (no stacked copy)
        inputs, out = self._batch_buffers(len(take), tile)
        for row, view in zip(inputs, views, strict=True):
            row.copy_(view)
        probs = self.forward_probs(self.normalise(inputs), out=out)
        for (work, patch), prob in zip(take, probs, strict=True):
            assert work.acc is not None
            height, width = patch.weight.shape
            work.acc[:, patch.ay : patch.ay + height, patch.ax : patch.ax + width].addcmul_(
                prob[:, patch.sy : patch.sy + height, patch.sx : patch.sx + width], patch.weight
            )
            work.pending -= 1
            if work.pending == 0:
                work.window = None  # free the input before the unit waits for the writer
                self._unit_output(work)

    def _unit_output(self, work: _Work) -> None:
        """Back to level pixels (bilinear, on the model's thread) when the model's µm/px
        differs from the level's."""
        assert work.acc is not None
        unit = work.unit
        height, width = unit.y1 - unit.y0, unit.x1 - unit.x0
        if work.acc.shape[1:] == (height, width):
            work.out = work.acc
            return
        work.out = F.interpolate(work.acc[None], size=(height, width), mode="bilinear")[0]
        self._accs.give(work.acc)
        work.acc = None

    def _finish_unit(
        self, plan: Plan, writer: LabelWriter, work: _Work,
        mask_ready: Future[npt.NDArray[np.uint8]] | None = None, pool: Executor | None = None,
    ) -> npt.NDArray[np.uint8]:  # fmt: skip
        """uint8 probabilities and argmax mask of a unit; write it (writer thread, with the
        probabilities in ``pool`` if given); the mask, also handed to ``mask_ready`` as soon as
        it exists (before the writing)."""
        unit = work.unit
        height, width = unit.y1 - unit.y0, unit.x1 - unit.x0
        n_classes = len(self.spec.classes)
        if work.out is None:  # all glass
            mask = np.zeros((height, width), dtype=np.uint8)
            probs = np.zeros((n_classes, height, width), dtype=np.uint8)
            probs[0] = 255
        elif self.device_io:
            probs = work.out.to(torch.uint8).cpu().numpy()  # truncates 255 p + 0.5: rounds
            mask = argmax_first_tensor(work.out).cpu().numpy()
        else:
            values = work.out.cpu().numpy()
            probs = values.astype(np.uint8)
            mask = argmax_first(values)
        if work.acc is not None:
            self._accs.give(work.acc)
            work.acc = None
        work.out = None
        if mask_ready is not None:
            mask_ready.set_result(mask)
        writer.write_unit(unit.index, unit.x0, unit.y0, mask, probs, pool)
        return mask

    # ------------------------------------------------------------------ outlines
    def _trace_level(self, pyramid: SlidePyramid, plan: Plan) -> int:
        """The finest mask level that fits ``MAX_TRACE_PIXELS``, at or above the inference
        level (finer ones add no information)."""
        return next(
            (k for k in range(plan.level, len(pyramid.levels))
             if pyramid.levels[k].width * pyramid.levels[k].height <= MAX_TRACE_PIXELS),
            len(pyramid.levels) - 1,
        )  # fmt: skip

    def _unit_feed(self, pyramid: SlidePyramid, plan: Plan) -> UnitFeed:
        level = self._trace_level(pyramid, plan)
        info = pyramid.levels[level]
        tracer = RowTracer(
            (info.height, info.width), self.spec, pyramid.downsample(level), plan.slide_mpp
        )
        return UnitFeed(tracer, 1 << (level - plan.level), plan.unit_px, (plan.width, plan.height))

    def write_outlines(
        self, pyramid: SlidePyramid, plan: Plan, writer: LabelWriter,
        tracer: RowTracer | None = None,
    ) -> tuple[Path, int]:  # fmt: skip
        """The GeoJSON of ``tracer`` (fed during the run), or traced now from the stored mask
        level ``_trace_level`` picks."""
        import zarr

        level = self._trace_level(pyramid, plan)
        if tracer is not None:
            features = tracer.features()
        else:
            array = zarr.open_array(str(writer.group_dir / str(level)), mode="r")
            mask = np.asarray(array[:], dtype=np.uint8)
            downsample = pyramid.downsample(level)
            features = mask_to_features(mask, self.spec, downsample, plan.slide_mpp)
        path = writer.group_dir.with_suffix(".geojson")
        write_geojson(path, features, self.spec)
        logger.info("outlines: %d polygons at level %d", len(features), level)
        return path, len(features)


def run_error_message(exc: InferenceError) -> str:
    """One line for the CLI and job records."""
    return f"{exc.code}: {exc}"

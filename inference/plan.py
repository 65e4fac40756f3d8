"""Where and how a slide is read by the engine: run options, work units, the patch grid.

Pure geometry, no torch: work units are chunk-aligned blocks of the inference level (so a kill,
a resume or a dask task never shares a chunk with another); inside a unit the fewest patch
cores of at most ``tile - 2 * halo`` px are spread evenly, and ``blend_ramp`` gives each patch
its weights over the core edges it shares with a neighbour (see ``inference/engine.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from inference._pyramid import SlidePyramid
from inference.errors import InvalidRequestError, MissingMppError
from inference.spec import ModelSpec

__all__ = ["IO_PATHS", "SCHEDULES", "EngineOptions", "Plan", "Unit", "blend_ramp", "make_plan"]

SCHEDULES = ("auto", "lockstep", "threads")
IO_PATHS = ("auto", "host", "device")


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """Run settings; ``batch_size`` patches per forward pass, ``unit_chunks`` output chunks per
    work-unit side (the resume and memory granularity)."""

    batch_size: int = 16
    mpp_override: float | None = None
    unit_chunks: int = 4
    prefetch_units: int = 2
    decode_threads: int = 2
    skip_glass: bool = True
    background_io: bool = True  # threads schedule: reader, decoders, writer at lowest priority
    # "lockstep": reading and writing run between forward passes, on the model's thread (the
    # decode pool still uses its threads); "threads": in their own threads, beside the model;
    # "auto": lockstep on CPU (the model's threads already fill every core), threads on CUDA
    schedule: str = "auto"
    # "host": chunks decoded by libjpeg-turbo in threads into a reused window, outputs reduced
    # with numpy; "device": chunks decoded (nvJPEG, in batches, on CUDA) and pasted, and outputs
    # reduced, on the engine's device; "auto": device on CUDA, host on CPU. On CPU, "device"
    # runs the CUDA path's logic (with libjpeg-turbo for nvJPEG): that is how tests cover it
    io: str = "auto"

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= 4096:
            raise InvalidRequestError(f"batch size {self.batch_size} not in 1..4096")
        if self.mpp_override is not None and not 0.01 <= self.mpp_override <= 100:
            raise InvalidRequestError(f"mpp {self.mpp_override} not in 0.01..100 µm/px")
        if self.unit_chunks < 1 or self.prefetch_units < 1 or self.decode_threads < 1:
            raise InvalidRequestError("unit_chunks, prefetch_units, decode_threads must be >= 1")
        if self.schedule not in SCHEDULES:
            raise InvalidRequestError(f"schedule {self.schedule!r} not one of {SCHEDULES}")
        if self.io not in IO_PATHS:
            raise InvalidRequestError(f"io {self.io!r} not one of {IO_PATHS}")


@dataclass(frozen=True, slots=True)
class Unit:
    """A chunk-aligned block of the inference level: pixels [x0, x1) x [y0, y1)."""

    index: int
    x0: int
    y0: int
    x1: int
    y1: int


@dataclass(frozen=True, slots=True)
class Plan:
    """Where and how a slide is read: the pyramid level, the scale change, the patch grid."""

    level: int
    level_mpp: float
    slide_mpp: float
    scale: float  # model pixels per level pixel (1.0: no resampling)
    width: int  # inference level size
    height: int
    chunk_w: int
    chunk_h: int
    unit_chunks: int
    tile: int  # model patch side
    halo: int  # model pixels of context each side
    model_w: int
    model_h: int

    @property
    def stride(self) -> int:
        return self.tile - 2 * self.halo

    @property
    def unit_px(self) -> tuple[int, int]:
        """(width, height) of every work unit but the last column and row, inference pixels."""
        return self.chunk_w * self.unit_chunks, self.chunk_h * self.unit_chunks

    def units(self) -> list[Unit]:
        step_x, step_y = self.unit_px
        units: list[Unit] = []
        for y in range(0, self.height, step_y):
            for x in range(0, self.width, step_x):
                units.append(
                    Unit(
                        len(units), x, y, min(x + step_x, self.width), min(y + step_y, self.height)
                    )
                )
        return units

    def model_rect(self, unit: Unit) -> tuple[int, int, int, int]:
        s = self.scale
        return (
            math.floor(unit.x0 * s),
            math.floor(unit.y0 * s),
            min(self.model_w, math.ceil(unit.x1 * s)),
            min(self.model_h, math.ceil(unit.y1 * s)),
        )

    def unit_cores(self, start: int, stop: int) -> list[tuple[int, int]]:
        """(core start, core width) of the patches covering model pixels [start, stop) in 1-D:
        the fewest cores of at most ``stride`` px, spread evenly, owned by this unit alone."""
        length = stop - start
        count = max(1, math.ceil(length / self.stride))
        bounds = [start + round(i * length / count) for i in range(count + 1)]
        return [(bounds[i], bounds[i + 1] - bounds[i]) for i in range(count)]

    def fingerprint(self, spec: ModelSpec) -> dict[str, Any]:
        return {
            "model": spec.name,
            "version": spec.version,
            "level": self.level,
            "scale": round(self.scale, 6),
            "tile": self.tile,
            "halo": self.halo,
            "unit_chunks": self.unit_chunks,
        }


def make_plan(pyramid: SlidePyramid, spec: ModelSpec, options: EngineOptions) -> Plan:
    """Pick the level nearest the model's µm/px; resample only when it is more than 1 % off."""
    mpp = options.mpp_override if options.mpp_override is not None else pyramid.mpp
    if mpp is None:
        raise MissingMppError(
            f"{pyramid.root.name} has no microns-per-pixel; pass --mpp if you know it"
        )
    ratios = [
        abs(math.log(mpp * pyramid.downsample(k) / spec.mpp)) for k in range(len(pyramid.levels))
    ]
    level = int(np.argmin(ratios))
    level_mpp = mpp * pyramid.downsample(level)
    scale = level_mpp / spec.mpp
    if abs(scale - 1.0) < 0.01:
        scale = 1.0
    info = pyramid.levels[level]
    return Plan(
        level=level,
        level_mpp=level_mpp,
        slide_mpp=mpp,
        scale=scale,
        width=info.width,
        height=info.height,
        chunk_w=info.tile_width,
        chunk_h=info.tile_height,
        unit_chunks=options.unit_chunks,
        tile=spec.tile_size_px,
        halo=spec.overlap_px // 2,
        model_w=math.ceil(info.width * scale),
        model_h=math.ceil(info.height * scale),
    )


def blend_ramp(
    tile: int, core: int, blend: int, first: bool, last: bool
) -> npt.NDArray[np.float32]:
    """1-D weights of a patch whose ``core`` px sit centred in its ``tile``: a linear ramp
    ``blend`` px wide across each core edge shared with a neighbour (a hard cut when 0), and 1
    towards the unit's own edges (``first`` / ``last``), which no neighbour covers."""
    centres = np.arange(tile, dtype=np.float64) + 0.5 - (tile - core) // 2  # from core start
    weight = np.ones(tile, dtype=np.float64)
    if not first:
        left = np.clip((centres + blend / 2) / blend, 0, 1) if blend else (centres >= 0) * 1.0
        weight = np.minimum(weight, left)
    if not last:
        right = np.clip((core + blend / 2 - centres) / blend, 0, 1) if blend else (centres < core)
        weight = np.minimum(weight, right)
    return weight.astype(np.float32)

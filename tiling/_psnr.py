"""Measured quality for reduced levels: squared error of encoded tiles, and the step search.

A reduced level must stay >= ``min_psnr`` dB against the exact area average of level 0. The
converter holds those pixels when it encodes a tile, so the error of every encoded tile is
measured (one decode), summed per level in exact integers (order-free: threads and band
processes give the same sums) and turned into the level's PSNR at the end. A level's PSNR is
its mean squared error, so the sums decide; glass tiles count, as in the issue's figure.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import simplejpeg

from tiling.codec import MAX_STEP, decode_jpeg, encode_jpeg_flat

__all__ = [
    "MAX_REPAIRS",
    "SAMPLE_TILES",
    "SampleTile",
    "choose_steps",
    "coarsest_step",
    "finer_steps",
    "measured_info",
    "psnr_db",
    "saved_steps",
    "squared_error",
]

RGB = npt.NDArray[np.uint8]
SampleTile = tuple[RGB, int, int]  # (tile pixels as the build makes them, valid_w, valid_h)

SAMPLE_TILES = 128  # level-0 tiles whose reductions sample every level (all when fewer)
SAMPLE_MARGIN_DB = 0.25  # the sample aims this much above the floor: a level rarely misses
DEEP_STEP_FACTOR = 0.85  # unsampled (tiny) levels: finer than the level below, denser detail
MAX_REPAIRS = 4


def squared_error(pixels: RGB, data: bytes, valid_w: int, valid_h: int) -> int:
    """Sum of squared differences between ``pixels`` and the JPEG ``data`` over the valid area."""
    try:
        decoded = simplejpeg.decode_jpeg(data, colorspace="RGB")  # GIL-free, 0.6 ms / 256 px
    except (ValueError, RuntimeError):
        decoded = decode_jpeg(data)
    diff = decoded[:valid_h, :valid_w].astype(np.int32) - pixels[:valid_h, :valid_w]
    flat = diff.ravel()
    return int(np.dot(flat, flat))


def psnr_db(sse: int, samples: int) -> float:
    """PSNR of a mean squared error ``sse / samples`` on 8-bit values (inf when exact)."""
    if sse == 0 or samples == 0:
        return math.inf
    return 10 * math.log10(255.0**2 * samples / sse)


def _sample_psnr(tiles: Sequence[SampleTile], step: float) -> float:
    sse = samples = 0
    for pixels, valid_w, valid_h in tiles:
        sse += squared_error(pixels, encode_jpeg_flat(pixels, step), valid_w, valid_h)
        samples += valid_w * valid_h * 3
    return psnr_db(sse, samples)


def coarsest_step(tiles: Sequence[SampleTile], min_psnr: float, start: float = 16) -> float:
    """The largest flat step (a multiple of 0.5) whose PSNR over ``tiles`` is >= ``min_psnr``.

    PSNR falls monotonically with the step and MSE grows about as step**2, so the next guess
    is the step scaled by 10**(margin / 20), kept strictly between the best passing and the
    smallest failing step (bisection after three guesses): a few encodes of the sample.
    Works in half steps; 1 when even step 1 misses.
    """
    if not tiles:
        return start
    passing, failing = 0, 2 * MAX_STEP + 1  # in half steps
    half, rounds = round(2 * start), 0
    while failing - passing > 1:
        measured = _sample_psnr(tiles, half / 2)
        if measured >= min_psnr:
            passing = half
        else:
            failing = half
        rounds += 1
        guess = round(half * 10 ** ((measured - min_psnr) / 20)) if rounds < 3 else 0
        if not passing < guess < failing:
            if rounds >= 3:
                guess = (passing + failing) // 2
            else:
                guess = min(max(guess, passing + 1), failing - 1)
        half = guess
    return max(passing, 2) / 2


def choose_steps(patches: Sequence[Sequence[SampleTile]], min_psnr: float) -> list[float]:
    """Per reduced level (index = level; ``patches[level]`` its sample), the coarsest flat step
    whose PSNR on the sample clears ``min_psnr`` plus a margin. Levels without a sample
    (patches under 8 px) get a finer step than the level below: their detail is denser."""
    steps = [0.0]
    for level in range(1, len(patches)):
        if patches[level]:
            start = steps[-1] or 16
            steps.append(coarsest_step(patches[level], min_psnr + SAMPLE_MARGIN_DB, start=start))
        else:
            steps.append(max(1.0, round(2 * steps[-1] * DEEP_STEP_FACTOR) / 2))
    return steps


def saved_steps(data: bytes | None, levels: int) -> list[float] | None:
    """Steps a killed run chose and saved, or None when absent or not for these levels."""
    try:
        steps = json.loads(data) if data is not None else None
    except ValueError:
        return None
    if not isinstance(steps, list) or len(steps) != levels:
        return None
    if not all(isinstance(step, (int, float)) and 0 <= step <= 255 for step in steps):
        return None
    return [float(step) for step in steps]


def finer_steps(
    steps: Sequence[float], psnr: Sequence[float], failing: Iterable[int], floor: float
) -> list[float]:
    """Finer steps for levels measured below ``floor``: scaled by the miss (MSE ~ step**2)."""
    new = list(steps)
    for level in failing:
        scaled = math.floor(2 * steps[level] * 10 ** ((psnr[level] - floor - 0.3) / 20)) / 2
        new[level] = max(1.0, min(steps[level] - 0.5, scaled))
    return new


def measured_info(steps: Sequence[float], psnr: Sequence[float], min_psnr: float) -> dict[str, Any]:
    """What the pyramid's metadata says of its reduced levels: steps and measured PSNR."""
    return {
        "encoding": "jpeg 4:4:4, flat quantisation tables",
        "min_psnr_db": min_psnr,
        "levels": [
            {
                "level": level,
                "step": steps[level],
                "psnr_db": None if math.isinf(psnr[level]) else round(psnr[level], 2),
            }
            for level in range(1, len(steps))
        ],
    }

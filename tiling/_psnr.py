"""Measured quality for reduced levels: squared error of encoded tiles, and the step search.

A reduced level must stay >= ``min_psnr`` dB against the exact area average of level 0. The
converter holds those pixels when it encodes a tile, so the error of every encoded tile is
measured (one decode), summed per level in exact integers (order-free: threads and band
processes give the same sums) and turned into the level's PSNR at the end. A level's PSNR is
its mean squared error, so the sums decide; glass tiles count, as in the issue's figure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import simplejpeg

from tiling.codec import MAX_STEP, decode_jpeg, encode_jpeg_flat

__all__ = ["SampleTile", "coarsest_step", "psnr_db", "squared_error"]

RGB = npt.NDArray[np.uint8]
SampleTile = tuple[RGB, int, int]  # (tile pixels as the build makes them, valid_w, valid_h)


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

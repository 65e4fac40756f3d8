"""Decoded chunks shared between unit windows, so that each stored chunk is decoded once.

Units run row by row, and a window reaches ``pad`` px past its unit on every side: it shares
its left chunk columns with the previous window and its top chunk rows with the windows of the
unit row above. Decoding those again cost 24-36 chunk decodes per unit for its own 16 (CPU
taken from the model). The cache keeps the previous window's chunks whole (its right
neighbour's left halo) and, of every older chunk, only the pixel rows the next unit row will
read: a strip of ``pad`` rows plus the chunk row below, across the slide, two of them alive at
the end of a unit row, so memory grows with the slide's width (~23 MB at 10000 px wide, 256 px
chunks), never with its height.

A cached piece is used only where it covers every row a window needs; anything else is decoded
again, so the cache changes how fast a window is read, never its pixels. Pieces are numpy arrays
(the host path) or (height, width, 3) tensor views on the engine's device (the device path):
both slice and paste alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

__all__ = ["ChunkCache", "Decoded", "Key", "Pixels"]

Key = tuple[int, int]  # (col, row)
Pixels = npt.NDArray[np.uint8] | torch.Tensor  # (height, width, 3 or 4)
Decoded = Pixels | None  # None: the chunk was never written (glass)


def _paste(out: Pixels, tile: Pixels, x: int, y: int) -> None:
    """Copy ``tile`` into ``out`` with its top-left at (x, y), clipped to both."""
    height, width = out.shape[:2]
    sx0, sy0 = max(0, -x), max(0, -y)
    dx0, dy0 = max(0, x), max(0, y)
    w = min(tile.shape[1] - sx0, width - dx0)
    h = min(tile.shape[0] - sy0, height - dy0)
    if w > 0 and h > 0:
        out[dy0 : dy0 + h, dx0 : dx0 + w] = tile[sy0 : sy0 + h, sx0 : sx0 + w, :3]  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class _Piece:
    """Rows [top, bottom) of a decoded chunk; ``strip``: cropped for a later unit row."""

    pixels: Decoded
    top: int
    bottom: int
    strip: bool


class ChunkCache:
    """Decoded chunks of one pyramid level (one producer thread; not thread-safe)."""

    def __init__(self) -> None:
        self.decoded = 0  # chunks decoded since creation (benchmarks, tests)
        self._level = -1
        self._pieces: dict[Key, _Piece] = {}
        self._last_keep: int | None = None  # the previous window's ``keep_from``

    def clear(self) -> None:
        self._pieces, self._level, self._last_keep = {}, -1, None

    def window(
        self, level: int, tile: tuple[int, int], grid: tuple[int, int],
        rect: tuple[int, int, int, int], keep_from: int | None,
        decode: Callable[[Sequence[Key]], Sequence[Decoded]],
        blank: Callable[[int, int], Pixels] | None = None,
    ) -> Pixels:  # fmt: skip
        """(height, width, 3) pixels of ``rect`` = (x, y, width, height) of ``level``, white
        outside the stored chunks; ``decode`` turns chunk keys into pixels (in parallel),
        ``blank`` makes the white window (None: numpy).
        ``keep_from``: the first level row the next unit row's windows read (None: no next row,
        or unknown: only the previous window's chunks are kept)."""
        tw, th = tile
        cols, rows = grid
        x, y, width, height = rect
        if level != self._level:
            self.clear()
            self._level = level
        keys = [
            (col, row)
            for row in range(max(0, y // th), min(rows, -(-(y + height) // th)))
            for col in range(max(0, x // tw), min(cols, -(-(x + width) // tw)))
        ]

        def covers(key: Key) -> bool:
            piece = self._pieces.get(key)
            top, bottom = max(0, y - key[1] * th), min(th, y + height - key[1] * th)
            return piece is not None and piece.top <= top and piece.bottom >= bottom

        missing = [k for k in keys if not covers(k)]
        fresh = dict(zip(missing, decode(missing), strict=True))
        self.decoded += len(missing)
        out = blank(height, width) if blank else np.full((height, width, 3), 255, np.uint8)
        current: dict[Key, _Piece] = {}
        for key in keys:
            piece = _Piece(fresh[key], 0, th, False) if key in fresh else self._pieces[key]
            current[key] = piece
            if piece.pixels is not None:
                _paste(out, piece.pixels, key[0] * tw - x, key[1] * th + piece.top - y)
        self._pieces = self._kept(current, y, th, keep_from)
        return out

    def _kept(
        self, current: dict[Key, _Piece], y: int, th: int, keep_from: int | None
    ) -> dict[Key, _Piece]:
        """This window's pieces whole; older whole pieces cropped to the rows from
        ``keep_from`` on; strips dropped once the windows have passed below them."""
        kept = dict(current)
        for key, piece in self._pieces.items():
            if key in kept:
                continue
            if piece.strip:
                if key[1] * th + piece.bottom > y:
                    kept[key] = piece
                continue
            if self._last_keep is None:
                continue
            top = max(piece.top, self._last_keep - key[1] * th)
            if top >= piece.bottom:
                continue
            pixels = piece.pixels
            if pixels is not None:  # a copy: the whole chunk's memory goes
                rows = pixels[top - piece.top : piece.bottom - piece.top]
                pixels = rows.clone() if isinstance(rows, torch.Tensor) else rows.copy()
            kept[key] = _Piece(pixels, top, piece.bottom, True)
        self._last_keep = keep_from
        return kept

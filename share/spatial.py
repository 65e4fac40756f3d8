"""Grid keys of the annotations' spatial index: a loose quadtree flattened into one B-tree column.

Why not SQLite's R*Tree: its insert costs ~12 us a row at 10^6 rows (measured on this
2-core machine), which alone took more than half of the 20 s budget of a 10^6-polygon import;
a key in an ordinary ``(slide_id, cell)`` index costs ~3 us and answers viewport queries as
fast (a few dozen index range scans). PostgreSQL uses the same keys (its GiST box index bounded
a 10^6-row COPY).

An annotation whose bbox's larger side is ``size`` gets the finest level whose cells
(``CELL_PX << level`` px) are at least that large, and the cell there holding its bbox's
min corner. It then lies inside the 2 x 2 block of cells from that one, so a viewport meets it
only if its cell is in the rows and columns from one cell before the viewport to the
viewport's end: per level, one key range per row of cells. Keys are
``level << 42 | row << 21 | col`` with coordinates shifted by ``OFFSET`` (> ``MAX_COORD``).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from share.geometry import MAX_COORD

__all__ = ["CELL_PX", "LEVELS", "cell_key", "cell_keys", "viewport_ranges"]

CELL_PX = 256  # level-0 cell: a nucleus is ~12 px, a screen at full resolution ~2000 px
LEVELS = 21  # CELL_PX << 20 = 2^28 px > 2 * MAX_COORD: every bbox fits some level
OFFSET = float(1 << 27)
_ROW_SHIFT = 21
_LEVEL_SHIFT = 42
_MAX_RANGES = 512  # past this, one range per level (rows beyond the viewport filtered out)

assert OFFSET > MAX_COORD and (CELL_PX << (LEVELS - 1)) >= 2 * MAX_COORD


def _level(size: float) -> int:
    level = 0
    for k in range(LEVELS - 1):
        level += (CELL_PX << k) < size
    return level


def cell_key(min_x: float, min_y: float, max_x: float, max_y: float) -> int:
    """Grid key of one bbox (level-0 px, within +-MAX_COORD)."""
    level = _level(max(max_x - min_x, max_y - min_y))
    cell = float(CELL_PX << level)
    col = math.floor((min_x + OFFSET) / cell)
    row = math.floor((min_y + OFFSET) / cell)
    return (level << _LEVEL_SHIFT) | (row << _ROW_SHIFT) | col


def cell_keys(
    min_x: NDArray[np.float64],
    min_y: NDArray[np.float64],
    max_x: NDArray[np.float64],
    max_y: NDArray[np.float64],
) -> NDArray[np.int64]:
    """``cell_key`` over arrays: the same float operations, so the same keys."""
    size = np.maximum(max_x - min_x, max_y - min_y)
    level = np.zeros(len(size), np.int64)
    for k in range(LEVELS - 1):
        level += (CELL_PX << k) < size
    cell = (CELL_PX << level).astype(np.float64)
    col = np.floor((min_x + OFFSET) / cell).astype(np.int64)
    row = np.floor((min_y + OFFSET) / cell).astype(np.int64)
    keys: NDArray[np.int64] = (level << _LEVEL_SHIFT) | (row << _ROW_SHIFT) | col
    return keys


def viewport_ranges(x0: float, y0: float, x1: float, y1: float) -> list[tuple[int, int]]:
    """Inclusive key ranges holding every bbox that may meet ``[x0, x1] x [y0, y1]``, coarse
    levels first (large shapes before small ones when an answer is capped)."""
    x0, y0 = max(x0, -MAX_COORD), max(y0, -MAX_COORD)
    x1, y1 = min(x1, MAX_COORD), min(y1, MAX_COORD)
    if x1 < x0 or y1 < y0:
        return []
    out: list[tuple[int, int]] = []
    for level in reversed(range(LEVELS)):
        cell = float(CELL_PX << level)
        base = level << _LEVEL_SHIFT
        col0 = max(math.floor((x0 + OFFSET) / cell) - 1, 0)
        col1 = math.floor((x1 + OFFSET) / cell)
        row0 = max(math.floor((y0 + OFFSET) / cell) - 1, 0)
        row1 = math.floor((y1 + OFFSET) / cell)
        out.extend(
            (base | (row << _ROW_SHIFT) | col0, base | (row << _ROW_SHIFT) | col1)
            for row in range(row0, row1 + 1)
        )
    if len(out) > _MAX_RANGES:  # a low-zoom view: a range per level, the bbox test filters
        first: dict[int, int] = {}
        last: dict[int, int] = {}
        for lo, hi in out:
            level = lo >> _LEVEL_SHIFT
            first.setdefault(level, lo)
            last[level] = hi
        out = [(first[lv], last[lv]) for lv in first]
    return out

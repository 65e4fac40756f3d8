"""Outlines traced while the model runs: unit masks fed, row by row, to a :class:`RowTracer`.

Tracing at the end of a run was a serial ~1.2 s tail per 0.4 GP slide (both cores but one
idle); fed by the writer thread as unit rows finish, only the last band is left for the end.
Used for a whole run from scratch; resumed and partial runs trace the stored level at the end.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from inference.outlines import RowTracer

__all__ = ["UnitFeed"]


class UnitFeed:
    """Pastes each finished unit's mask (inference level) into the tracer's coarser level and
    advances the tracer past every unit row whose units, and those of the rows above, are all
    in. Called from one thread (the writer)."""

    def __init__(
        self, tracer: RowTracer, step: int, unit_size: tuple[int, int], size: tuple[int, int]
    ) -> None:
        """``step``: inference pixels per traced pixel (a power of two); ``unit_size`` and
        ``size``: (width, height) of a work unit and of the inference level."""
        self.tracer = tracer
        self.step = step
        self.unit_w, self.unit_h = unit_size
        self.width, self.height = size
        self._per_row = math.ceil(self.width / self.unit_w)
        self._missing = [self._per_row] * math.ceil(self.height / self.unit_h)
        self._next_row = 0  # the first unit row not yet complete

    def add(self, x0: int, y0: int, mask: npt.NDArray[np.uint8]) -> None:
        """The (h, w) mask of the unit at inference pixel (x0, y0): nearest-neighbour
        reduction, as the label pyramid's levels are (traced pixel (x, y) = inference pixel
        (x * step, y * step))."""
        step = self.step
        fx, fy = -x0 % step, -y0 % step
        self.tracer.paste((x0 + fx) // step, (y0 + fy) // step, mask[fy::step, fx::step])
        self._missing[y0 // self.unit_h] -= 1
        rows = len(self._missing)
        while self._next_row < rows and self._missing[self._next_row] == 0:
            self._next_row += 1
        bottom = min(self.height, self._next_row * self.unit_h)  # inference rows all in
        self.tracer.advance(-(-bottom // step))  # traced rows y with y * step < bottom

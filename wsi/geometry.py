"""Typed geometry crossing the ``wsi`` seam.

APIs take (x, y) and (width, height); arrays are (y, x, c).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Point", "Size"]


@dataclass(frozen=True, slots=True)
class Point:
    x: int
    y: int


@dataclass(frozen=True, slots=True)
class Size:
    width: int
    height: int

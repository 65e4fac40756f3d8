"""The one interface every slide backend implements.

Coordinates: ``location`` is (x, y) in level-0 pixels, ``size`` is (width, height) in pixels of
the requested level; returned arrays are (height, width, 3) uint8 RGB. Level 0 is full resolution.

At a level > 0 pass a ``location`` that is a multiple of the level's downsample (``col * tile *
downsample``): OpenSlide resamples bilinearly by the fractional remainder of ``location /
downsample``, the other backends floor it to the level's pixel grid, so only aligned reads agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

__all__ = [
    "MAX_LEVEL0_PIXELS",
    "MAX_SIDE_PX",
    "Mpp",
    "MppSource",
    "SlideReader",
    "StoredTiling",
]

# Sanity limits checked before any allocation: a 2^31 x 2^31 header must not reach numpy.
MAX_SIDE_PX = 1 << 20  # 1,048,576 px: larger than any scanner writes (~200k px today)
MAX_LEVEL0_PIXELS = 1 << 36  # 68.7 gigapixels

RGBArray = npt.NDArray[np.uint8]


class MppSource(StrEnum):
    """Where a microns-per-pixel value came from; never a silent guess."""

    VENDOR = "vendor"  # a vendor property (aperio.MPP, hamamatsu, DICOM PixelSpacing, OME)
    TIFF_RESOLUTION = "tiff-resolution"  # X/YResolution tags with a metric ResolutionUnit
    OVERRIDE = "override"  # given by the user (--mpp)
    MISSING = "missing"


@dataclass(frozen=True, slots=True)
class Mpp:
    """Micrometres per level-0 pixel, with provenance."""

    x: float | None
    y: float | None
    source: MppSource

    @classmethod
    def missing(cls) -> Mpp:
        return cls(None, None, MppSource.MISSING)

    @property
    def known(self) -> bool:
        return self.x is not None and self.y is not None


@dataclass(frozen=True, slots=True)
class StoredTiling:
    """How a level is stored, when its tiles can be copied without decoding.

    ``compression`` is ``"jpeg"`` when :meth:`SlideReader.read_stored_tile` returns standalone
    JPEG streams (tables merged, colour transform marked) that any decoder reads as RGB.
    Every tile, the right and bottom edge ones included, is ``tile_width x tile_height`` as the
    file stores it (padding past the level's edge is whatever the scanner wrote: crop it). A tile
    the file leaves empty (byte count 0) is returned as a white JPEG of the tile size.
    ``read_stored_tile`` is thread-safe (one ``pread`` per tile) and works after a decode error.
    """

    tile_width: int
    tile_height: int
    compression: str
    columns: int
    rows: int


@runtime_checkable
class SlideReader(Protocol):
    """A whole-slide image opened for reading. Backends take ``(path)`` in their constructor."""

    path: Path
    backend: str  # "openslide", "tifffile", "image", ...
    vendor: str  # "aperio", "hamamatsu", "dicom", "generic-tiff", "ome", ...

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        """(width, height) of each level, level 0 first."""
        ...

    @property
    def level_downsamples(self) -> tuple[float, ...]: ...

    @property
    def tile_size(self) -> tuple[int, int]:
        """(width, height) of level 0's stored tiles (a sensible read size when untiled)."""
        ...

    @property
    def mpp(self) -> Mpp: ...

    @property
    def objective_power(self) -> float | None: ...

    @property
    def icc_profile(self) -> bytes | None: ...

    @property
    def associated_images(self) -> tuple[str, ...]:
        """Names such as ``label``, ``macro``, ``thumbnail``; identifying, never in pyramids."""
        ...

    @property
    def properties(self) -> Mapping[str, str]:
        """Vendor properties, as the backend reports them."""
        ...

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> RGBArray:
        """Pixels of ``level`` starting at level-0 ``location``; out-of-slide areas are white."""
        ...

    def read_associated(self, name: str) -> RGBArray: ...

    def stored_tiling(self, level: int) -> StoredTiling | None:
        """The level's tile grid when stored tiles can be copied verbatim, else None."""
        ...

    def read_stored_tile(self, level: int, col: int, row: int) -> bytes:
        """The stored compressed tile as a standalone file (a complete JPEG for ``jpeg``)."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> SlideReader:
        """``with open_slide(path) as reader:`` closes the reader on exit."""
        ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class SlideInfo:
    """Everything ``iain info`` prints; built by :func:`wsi.describe`."""

    path: str
    backend: str
    vendor: str
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    tile_size: tuple[int, int]
    mpp: Mpp
    objective_power: float | None
    icc_profile_bytes: int
    associated_images: tuple[str, ...]
    stored_tiling: tuple[StoredTiling | None, ...]
    properties: Mapping[str, str] = field(default_factory=dict)
    mpp_note: str | None = None  # why a declared mpp was ignored (e.g. a 72-dpi tag), if it was

"""Shared behaviour of the backends: region checks, white compositing, mpp plausibility."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import numpy as np

from .errors import InvalidRegionError, SlideTooLargeError, UnreadableRegionError
from .reader import Mpp, MppSource, RGBArray, StoredTiling

__all__ = [
    "MAX_REGION_PIXELS",
    "MPP_PLAUSIBLE",
    "BaseReader",
    "plausible_mpp",
    "rgba_to_rgb",
    "ycbcr_to_rgb",
]

logger = logging.getLogger(__name__)

# A microscope's level-0 pixel lies in this range; 352.8 µm/px (72 dpi) is a scanner of paper.
MPP_PLAUSIBLE = (0.05, 50.0)
# One read_region call may not allocate more than this (256 Mpx = 768 MiB of RGB).
MAX_REGION_PIXELS = 1 << 28


def plausible_mpp(
    x: float | None, y: float | None, source: MppSource, name: str
) -> tuple[Mpp, str | None]:
    """Return the mpp, or ``missing`` plus a reason when the values are not a microscope's."""
    if x is None or y is None or source is MppSource.MISSING:
        return Mpp.missing(), None
    low, high = MPP_PLAUSIBLE
    if not (low <= x <= high and low <= y <= high):
        reason = (
            f"ignored implausible mpp {x:.4g} x {y:.4g} µm/px from {source.value} "
            f"(outside {low}..{high})"
        )
        logger.warning("slide mpp %s", reason)  # the file name may be identifying: not logged
        return Mpp.missing(), reason
    return Mpp(x, y, source), None


def rgba_to_rgb(rgba: np.ndarray) -> RGBArray:
    """Composite straight-alpha RGBA over white (transparent = outside the slide)."""
    rgb = np.ascontiguousarray(rgba[..., :3], dtype=np.uint8)
    if rgba.shape[-1] == 3:
        return rgb
    alpha = rgba[..., 3]
    if alpha.min() == 255:  # the common case: the region lies inside the slide
        return rgb
    a = alpha[..., None].astype(np.uint32)
    out = (rgb.astype(np.uint32) * a + 255 * (255 - a) + 127) // 255
    result: RGBArray = out.astype(np.uint8)
    return result


def _ycc_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """libjpeg's integer YCbCr -> RGB tables (jdcolor.c), indexed by the 0..255 chroma value."""
    c = np.arange(256, dtype=np.float64) - 128.0
    cr_r = np.rint(1.40200 * c).astype(np.int16)
    cb_b = np.rint(1.77200 * c).astype(np.int16)
    cr_g = -0.71414 * c
    cb_g = -0.34414 * c
    return cr_r, cb_b, cb_g, cr_g


_CR_R, _CB_B, _CB_G, _CR_G = _ycc_tables()
_GREEN = np.rint(_CB_G[:, None] + _CR_G[None, :]).astype(np.int16)  # [cb, cr] -> green offset


def ycbcr_to_rgb(ycc: np.ndarray) -> RGBArray:
    """JFIF (full-range BT.601) YCbCr to RGB with libjpeg's tables (so results match libjpeg)."""
    y = ycc[..., 0].astype(np.int16)
    cb, cr = ycc[..., 1], ycc[..., 2]
    out = np.empty((*ycc.shape[:-1], 3), np.uint8)
    np.clip(y + _CR_R[cr], 0, 255, out=out[..., 0], casting="unsafe")
    np.clip(y + _GREEN[cb, cr], 0, 255, out=out[..., 1], casting="unsafe")
    np.clip(y + _CB_B[cb], 0, 255, out=out[..., 2], casting="unsafe")
    return out


class BaseReader:
    """Common state and checks; subclasses fill in ``_read`` and the metadata properties."""

    backend = "base"
    path: Path
    vendor: str

    def __init__(self, path: Path) -> None:
        self.path = path
        self._broken: str | None = None  # an OpenSlide error: decoded reads are refused
        self._closed = False
        self._index_lock = threading.Lock()
        self._mpp_override: Mpp | None = None
        self.mpp_note: str | None = None  # why a declared mpp was rejected, for ``iain info``

    # -- metadata defaults ------------------------------------------------------------------
    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        raise NotImplementedError

    @property
    def tile_size(self) -> tuple[int, int]:
        return 256, 256

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        w0, h0 = self.level_dimensions[0]
        return tuple((w0 / w + h0 / h) / 2 for w, h in self.level_dimensions)

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    @property
    def mpp(self) -> Mpp:
        return self._mpp_override if self._mpp_override is not None else self._declared_mpp()

    def _declared_mpp(self) -> Mpp:
        return Mpp.missing()

    def set_mpp_override(self, mpp_um: float) -> None:
        """Use ``mpp_um`` (µm per level-0 pixel, both axes) instead of what the file says."""
        low, high = MPP_PLAUSIBLE
        if not low <= mpp_um <= high:
            raise InvalidRegionError(f"--mpp {mpp_um} is outside {low}..{high} µm/px")
        self._mpp_override = Mpp(mpp_um, mpp_um, MppSource.OVERRIDE)

    @property
    def objective_power(self) -> float | None:
        return None

    @property
    def icc_profile(self) -> bytes | None:
        return None

    @property
    def associated_images(self) -> tuple[str, ...]:
        return ()

    @property
    def properties(self) -> Mapping[str, str]:
        return {}

    def read_associated(self, name: str) -> RGBArray:
        raise InvalidRegionError(f"{self.path.name}: no associated image {name!r}")

    def stored_tiling(self, level: int) -> StoredTiling | None:
        self._check_level(level)
        return None

    def read_stored_tile(self, level: int, col: int, row: int) -> bytes:
        raise InvalidRegionError(f"{self.path.name}: level {level} has no stored tiles to copy")

    # -- reading -----------------------------------------------------------------------------
    def _check_level(self, level: int) -> None:
        if not 0 <= level < self.level_count:
            raise InvalidRegionError(f"level {level} not in 0..{self.level_count - 1}")

    def _check_associated_size(self, name: str, width: int, height: int) -> None:
        """Associated images are decoded whole: refuse absurd declared sizes first."""
        if width * height > MAX_REGION_PIXELS:
            raise SlideTooLargeError(
                f"{self.path.name}: associated image {name!r} declares {width} x {height} px"
            )

    def _check_open(self) -> None:
        if self._closed:
            raise UnreadableRegionError(f"{self.path.name}: reader is closed")

    def _check_usable(self) -> None:
        self._check_open()
        if self._broken is not None:
            raise UnreadableRegionError(
                f"{self.path.name}: reader unusable after an earlier error ({self._broken})"
            )

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> RGBArray:
        """Pixels of ``level`` at level-0 ``location`` (x, y), ``size`` (w, h); outside = white."""
        self._check_usable()
        self._check_level(level)
        x, y = (int(v) for v in location)
        w, h = (int(v) for v in size)
        if w <= 0 or h <= 0:
            raise InvalidRegionError(f"region size {w} x {h} must be positive")
        if w * h > MAX_REGION_PIXELS:
            raise InvalidRegionError(f"region {w} x {h} exceeds {MAX_REGION_PIXELS} pixels")
        return self._read(x, y, level, w, h)

    def _read(self, x: int, y: int, level: int, w: int, h: int) -> RGBArray:
        raise NotImplementedError

    def close(self) -> None:
        """Release file handles; idempotent."""

    def __enter__(self) -> BaseReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path.name!r} vendor={self.vendor!r}>"

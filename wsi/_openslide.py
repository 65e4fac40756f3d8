"""OpenSlide backend: every vendor format OpenSlide detects, DICOM WSI included.

OpenSlide decodes pixels; stored JPEG tiles are served raw by :mod:`wsi._stored` (TIFF-based
formats) or :mod:`wsi._dicom` (DICOM), because OpenSlide has no API for compressed tiles.
After an ``OpenSlideError`` the handle is unusable (OpenSlide's own rule): the reader is marked
broken and every later call raises :class:`UnreadableRegionError`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ._base import BaseReader, plausible_mpp, rgba_to_rgb, ycbcr_to_rgb
from ._dicom import DicomStoredTiles
from ._sniff import sniff
from ._stored import TiffStoredTiles
from .errors import CorruptSlideError, InvalidRegionError, SlideError, UnreadableRegionError
from .reader import Mpp, MppSource, RGBArray, StoredTiling

__all__ = ["OpenSlideReader"]

logger = logging.getLogger(__name__)

# Vendors whose mpp OpenSlide takes from a vendor property rather than TIFF resolution tags.
_VENDOR_MPP = {"aperio", "hamamatsu", "dicom", "leica", "mirax", "philips", "ventana", "sakura"}
# OpenSlide reads OME-TIFF as a one-level generic TIFF (its SubIFD pyramid and OME mpp lost).
_LEAVE_TO_TIFFFILE = {"ome", "qptiff"}
_TIFF_STORED = {"aperio", "generic-tiff", "philips", "ventana"}


class OpenSlideReader(BaseReader):
    """A slide opened with OpenSlide (``openslide-bin``)."""

    backend = "openslide"

    @classmethod
    def can_open(cls, path: str | Path) -> bool:
        """True when the bytes are a format OpenSlide detects and the structure checks pass."""
        import openslide

        try:
            found = sniff(path)
        except SlideError:
            return False
        if found.kind not in ("tiff", "dicom", "mirax") or found.vendor in _LEAVE_TO_TIFFFILE:
            return False
        try:
            return openslide.OpenSlide.detect_format(str(found.file)) is not None
        except openslide.OpenSlideError:
            return False

    def __init__(self, path: str | Path) -> None:
        import openslide

        found = sniff(path)
        super().__init__(Path(path))
        self._file = found.file
        try:
            self._slide = openslide.OpenSlide(str(found.file))
        except openslide.OpenSlideUnsupportedFormatError as exc:
            raise CorruptSlideError(f"{self.path.name}: OpenSlide cannot open it ({exc})") from exc
        except openslide.OpenSlideError as exc:
            raise CorruptSlideError(f"{self.path.name}: {exc}") from exc
        try:
            self._describe(found.vendor)
        except BaseException:
            self._slide.close()  # a half-built reader must not keep the handle open
            raise

    def _describe(self, sniffed_vendor: str) -> None:
        props = self._slide.properties
        self.vendor = props.get("openslide.vendor", sniffed_vendor)
        self._dims = tuple((int(w), int(h)) for w, h in self._slide.level_dimensions)
        self._downsamples = tuple(float(d) for d in self._slide.level_downsamples)
        self._props = dict(props)
        self._stored: TiffStoredTiles | DicomStoredTiles | None = None
        self._stored_ready = False
        self._fix_ycbcr = self.vendor == "dicom" and self._dicom_ycbcr()
        source = MppSource.VENDOR if self.vendor in _VENDOR_MPP else MppSource.TIFF_RESOLUTION
        try:
            x: float | None = float(props["openslide.mpp-x"])
            y: float | None = float(props["openslide.mpp-y"])
        except (KeyError, ValueError):
            x = y = None
        self._mpp, self.mpp_note = plausible_mpp(x, y, source, self.path.name)

    def _dicom_ycbcr(self) -> bool:
        index = self._stored_index()
        fix = isinstance(index, DicomStoredTiles) and index.ycbcr_labelled_rgb()
        if fix:
            logger.info("DICOM JFIF frames labelled RGB; converting YCbCr")
        return fix

    # -- metadata ----------------------------------------------------------------------------
    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return self._dims

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return self._downsamples

    @property
    def tile_size(self) -> tuple[int, int]:
        w = self._props.get("openslide.level[0].tile-width")
        h = self._props.get("openslide.level[0].tile-height")
        if w and h and int(w) > 8 and int(h) > 8:
            return int(w), int(h)
        return 256, 256

    def _declared_mpp(self) -> Mpp:
        return self._mpp

    @property
    def objective_power(self) -> float | None:
        value = self._props.get("openslide.objective-power")
        try:
            return float(value) if value else None
        except ValueError:
            return None

    @property
    def icc_profile(self) -> bytes | None:
        raw = getattr(self._slide, "_profile", None)
        if isinstance(raw, bytes):
            return raw
        profile = self._slide.color_profile
        return bytes(profile.tobytes()) if profile is not None else None

    @property
    def associated_images(self) -> tuple[str, ...]:
        names = {
            key.split(".")[2] for key in self._props if key.startswith("openslide.associated.")
        }
        return tuple(sorted(names))

    @property
    def properties(self) -> Mapping[str, str]:
        return self._props

    # -- pixels ------------------------------------------------------------------------------
    def _fail(self, exc: Exception, what: str) -> UnreadableRegionError:
        self._broken = str(exc)
        logger.warning("OpenSlide failed reading %s; handle dropped", what)
        return UnreadableRegionError(f"{self.path.name}: cannot decode {what} ({exc})")

    def _read(self, x: int, y: int, level: int, w: int, h: int) -> RGBArray:
        import openslide

        try:
            image = self._slide.read_region((x, y), level, (w, h))
        except openslide.OpenSlideError as exc:
            raise self._fail(exc, f"region ({x}, {y}) {w} x {h} of level {level}") from exc
        return self._to_rgb(np.asarray(image))

    def _to_rgb(self, rgba: np.ndarray) -> RGBArray:
        if self._fix_ycbcr:
            rgba = np.concatenate([ycbcr_to_rgb(rgba[..., :3]), rgba[..., 3:]], axis=-1)
        return rgba_to_rgb(rgba)

    def read_associated(self, name: str) -> RGBArray:
        import openslide

        self._check_usable()
        if name not in self.associated_images:
            raise InvalidRegionError(f"{self.path.name}: no associated image {name!r}")
        prefix = f"openslide.associated.{name}."
        width = int(self._props.get(prefix + "width", "0") or 0)
        height = int(self._props.get(prefix + "height", "0") or 0)
        self._check_associated_size(name, width, height)
        try:
            image = self._slide.associated_images[name]
        except openslide.OpenSlideError as exc:
            raise self._fail(exc, f"associated image {name!r}") from exc
        return rgba_to_rgb(np.asarray(image))

    # -- stored tiles ------------------------------------------------------------------------
    def _stored_index(self) -> TiffStoredTiles | DicomStoredTiles | None:
        if not self._stored_ready:
            with self._index_lock:  # tile-server threads may ask at once: build one index
                if not self._stored_ready:
                    if self.vendor in _TIFF_STORED:
                        self._stored = TiffStoredTiles(self._file, self._dims)
                    elif self.vendor == "dicom":
                        self._stored = DicomStoredTiles(self._file, self._dims)
                    self._stored_ready = True
        return self._stored

    def stored_tiling(self, level: int) -> StoredTiling | None:
        self._check_open()
        self._check_level(level)
        index = self._stored_index()
        return None if index is None else index.tiling(level)

    def read_stored_tile(self, level: int, col: int, row: int) -> bytes:
        self._check_open()  # raw bytes do not need OpenSlide: still served after a decode error
        self._check_level(level)
        index = self._stored_index()
        if index is None:
            raise InvalidRegionError(f"{self.path.name}: level {level} has no stored tiles")
        return index.read(level, col, row)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._stored is not None:
            self._stored.close()
            self._stored = None
        self._slide.close()

"""tifffile backend: Aperio SVS, OME-TIFF, generic tiled TIFF and QPTIFF, read without OpenSlide.

Pixels come through tifffile's Zarr view of each pyramid level (decoding only the tiles a region
touches); stored JPEG tiles are served raw by :class:`wsi._stored.TiffStoredTiles`. Multichannel
8-bit images (QPTIFF, OME) show their first three channels as R, G, B; one channel is grey.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ._base import BaseReader, plausible_mpp
from ._sniff import sniff
from ._stored import TiffStoredTiles
from .errors import (
    CorruptSlideError,
    InvalidRegionError,
    SlideError,
    UnreadableRegionError,
    UnsupportedFormatError,
)
from .reader import Mpp, MppSource, RGBArray, StoredTiling

__all__ = ["TifffileReader"]

logger = logging.getLogger(__name__)

_CLAIMED_VENDORS = {"aperio", "generic-tiff", "ome", "qptiff"}
_OME_UNITS_UM = {"µm": 1.0, "um": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6}
# Any library error while decoding; imagecodecs raises its own classes (DelayedImportError, ...).
_DECODE_ERRORS = (ValueError, RuntimeError, OSError, IndexError, KeyError, TypeError)


class TifffileReader(BaseReader):
    """A TIFF-family slide read with tifffile and imagecodecs."""

    backend = "tifffile"

    @classmethod
    def can_open(cls, path: str | Path) -> bool:
        """True for TIFF files with a vendor we handle (NDPI, Philips... go to OpenSlide)."""
        try:
            found = sniff(path)
        except SlideError:
            return False
        return found.kind == "tiff" and found.vendor in _CLAIMED_VENDORS

    def __init__(self, path: str | Path) -> None:
        import tifffile
        import zarr

        found = sniff(path)
        super().__init__(Path(path))
        if found.kind != "tiff":
            raise UnsupportedFormatError(f"{self.path.name}: not a TIFF file")
        self.vendor = found.vendor
        self._lock = threading.Lock()
        try:
            self._tif = tifffile.TiffFile(found.file)
        except (tifffile.TiffFileError, *_DECODE_ERRORS) as exc:
            raise CorruptSlideError(f"{self.path.name}: tifffile cannot parse it ({exc})") from exc
        try:
            series = self._tif.series[0]
            self._axes = series.axes
            if series.dtype != np.uint8:
                raise UnsupportedFormatError(
                    f"{self.path.name}: {series.dtype} pixels; only 8-bit slides are supported"
                )
            if self._axes not in ("YXS", "CYX", "YX", "SYX"):
                raise UnsupportedFormatError(
                    f"{self.path.name}: image axes {self._axes} unsupported"
                )
            self._levels = [
                zarr.open_array(series.aszarr(level=i), mode="r") for i in range(len(series.levels))
            ]
            self._series = series
        except SlideError:
            self._tif.close()
            raise
        except (tifffile.TiffFileError, *_DECODE_ERRORS) as exc:
            self._tif.close()
            raise CorruptSlideError(f"{self.path.name}: tifffile cannot parse it ({exc})") from exc
        self._dims = tuple(
            (int(a.shape[self._x_axis]), int(a.shape[self._x_axis - 1])) for a in self._levels
        )
        self._page = series.keyframe
        self._stored: TiffStoredTiles | None = None
        self._file = found.file
        try:
            self._desc_meta = self._description_metadata()
            self._mpp, self.mpp_note = self._find_mpp()
        except BaseException:
            self._tif.close()  # a half-built reader must not keep the file open
            raise

    @property
    def _x_axis(self) -> int:
        return self._axes.index("X")

    def _description_metadata(self) -> dict[str, Any]:
        import tifffile

        desc = self._page.description or ""
        if self.vendor == "aperio":
            try:
                return dict(tifffile.tifffile.svs_description_metadata(desc))
            except ValueError:
                return {}
        return {}

    def _find_mpp(self) -> tuple[Mpp, str | None]:
        name = self.path.name
        if self.vendor == "aperio" and "MPP" in self._desc_meta:
            try:
                value = float(self._desc_meta["MPP"])
            except (TypeError, ValueError):
                return Mpp.missing(), f"unreadable Aperio MPP {self._desc_meta['MPP']!r}"
            return plausible_mpp(value, value, MppSource.VENDOR, name)
        if self.vendor == "ome":
            found = self._ome_mpp()
            if found is not None:
                return plausible_mpp(*found, MppSource.VENDOR, name)
        return plausible_mpp(*self._resolution_mpp(), MppSource.TIFF_RESOLUTION, name)

    def _ome_mpp(self) -> tuple[float, float] | None:
        desc = self._tif.pages.first.description or ""
        pixels = re.search(r"<(?:\w+:)?Pixels\b[^>]*>", desc)
        if pixels is None:
            return None
        attrs = dict(re.findall(r'(\w+)="([^"]*)"', pixels.group(0)))
        try:
            x, y = float(attrs["PhysicalSizeX"]), float(attrs["PhysicalSizeY"])
        except (KeyError, ValueError):
            return None
        sx = _OME_UNITS_UM.get(attrs.get("PhysicalSizeXUnit", "µm"))
        sy = _OME_UNITS_UM.get(attrs.get("PhysicalSizeYUnit", "µm"))
        return (x * sx, y * sy) if sx and sy else None

    def _resolution_mpp(self) -> tuple[float | None, float | None]:
        tags = self._page.tags
        unit_tag, xr, yr = tags.get(296), tags.get(282), tags.get(283)
        if xr is None or yr is None:
            return None, None
        unit = int(unit_tag.value) if unit_tag is not None else 2
        per_um = {2: 25400.0, 3: 10000.0}.get(unit)  # inch, centimetre in µm
        try:
            rx = xr.value[0] / xr.value[1]
            ry = yr.value[0] / yr.value[1]
        except (ZeroDivisionError, TypeError, IndexError):
            return None, None
        if per_um is None or rx <= 0 or ry <= 0:
            return None, None
        return per_um / rx, per_um / ry

    # -- metadata ----------------------------------------------------------------------------
    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return self._dims

    @property
    def tile_size(self) -> tuple[int, int]:
        page = self._page
        if page.is_tiled:
            return int(page.tilewidth), int(page.tilelength)
        return 256, 256

    def _declared_mpp(self) -> Mpp:
        return self._mpp

    @property
    def objective_power(self) -> float | None:
        value: Any = None
        if self.vendor == "aperio":
            value = self._desc_meta.get("AppMag")
        elif self.vendor in ("qptiff", "ome"):
            desc = self._tif.pages.first.description or ""
            match = re.search(r"<Objective>\s*(\d+(?:\.\d+)?)x?\s*</Objective>", desc) or re.search(
                r'NominalMagnification="([\d.]+)"', desc
            )
            value = match.group(1) if match else None
        try:
            return float(value) if value is not None else None
        except ValueError:
            return None

    @property
    def icc_profile(self) -> bytes | None:
        tag = self._page.tags.get(34675)
        return bytes(tag.value) if tag is not None else None

    def _associated_series(self) -> dict[str, Any]:
        names: dict[str, Any] = {}
        for s in self._tif.series[1:]:
            name = (s.name or "").strip().lower()
            if name in ("label", "macro", "thumbnail", "overview") and s.dtype == np.uint8:
                names.setdefault(name, s)
        return names

    @property
    def associated_images(self) -> tuple[str, ...]:
        return tuple(sorted(self._associated_series()))

    @property
    def properties(self) -> Mapping[str, str]:
        props = {f"tiff.{k}": str(v) for k, v in self._desc_meta.items()}
        props["tiff.ImageDescription"] = (self._page.description or "")[:4096]
        return props

    # -- pixels ------------------------------------------------------------------------------
    def _to_rgb(self, data: np.ndarray) -> RGBArray:
        axes = self._axes
        if axes == "YX":
            data = np.repeat(data[..., None], 3, axis=2)
        elif axes in ("CYX", "SYX"):
            data = np.moveaxis(data, 0, -1)
        if data.shape[2] == 1:
            data = np.repeat(data, 3, axis=2)
        elif data.shape[2] == 2:
            data = np.concatenate([data, np.zeros_like(data[..., :1])], axis=2)
        return np.ascontiguousarray(data[..., :3], dtype=np.uint8)

    def _read(self, x: int, y: int, level: int, w: int, h: int) -> RGBArray:
        ds = self.level_downsamples[level]
        lx, ly = int(x / ds), int(y / ds)
        width, height = self._dims[level]
        out = np.full((h, w, 3), 255, np.uint8)
        x0, y0 = max(lx, 0), max(ly, 0)
        x1, y1 = min(lx + w, width), min(ly + h, height)
        if x1 <= x0 or y1 <= y0:
            return out
        arr = self._levels[level]
        ix = self._x_axis
        index: list[slice] = [slice(None)] * arr.ndim
        index[ix - 1], index[ix] = slice(y0, y1), slice(x0, x1)
        try:
            with self._lock:
                data = np.asarray(arr[tuple(index)])
        except _DECODE_ERRORS as exc:
            raise UnreadableRegionError(
                f"{self.path.name}: cannot decode region ({x}, {y}) {w} x {h} of level {level} "
                f"({type(exc).__name__}: {exc})"
            ) from exc
        out[y0 - ly : y1 - ly, x0 - lx : x1 - lx] = self._to_rgb(data)
        return out

    def read_associated(self, name: str) -> RGBArray:
        series = self._associated_series().get(name)
        if series is None:
            raise InvalidRegionError(f"{self.path.name}: no associated image {name!r}")
        shape, axes = series.shape, series.axes
        if "X" not in axes or "Y" not in axes:
            raise UnsupportedFormatError(f"{self.path.name}: associated {name!r} has axes {axes}")
        width, height = int(shape[axes.index("X")]), int(shape[axes.index("Y")])
        self._check_associated_size(name, width, height)
        try:
            with self._lock:
                data = np.asarray(series.asarray())
        except _DECODE_ERRORS as exc:
            raise UnreadableRegionError(
                f"{self.path.name}: cannot decode {name!r} ({exc})"
            ) from exc
        if data.ndim == 2:
            data = np.repeat(data[..., None], 3, axis=2)
        return np.ascontiguousarray(data[..., :3], dtype=np.uint8)

    # -- stored tiles ------------------------------------------------------------------------
    def _stored_index(self) -> TiffStoredTiles:
        self._check_open()
        if self._stored is None:
            with self._index_lock:  # tile-server threads may ask at once: build one index
                if self._stored is None:
                    self._stored = TiffStoredTiles(self._file, self._dims)
        return self._stored

    def stored_tiling(self, level: int) -> StoredTiling | None:
        self._check_level(level)
        return self._stored_index().tiling(level)

    def read_stored_tile(self, level: int, col: int, row: int) -> bytes:
        self._check_level(level)
        return self._stored_index().read(level, col, row)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._stored is not None:
            self._stored.close()
            self._stored = None
        self._tif.close()

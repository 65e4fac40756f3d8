"""In-memory and plain-image slides, like OpenSlide's ``ImageSlide``: edge cases made cheap.

``ArraySlide(array, mpp=0.5)`` turns any (H, W, 3) uint8 array into a :class:`SlideReader`, with
optional 2x area-averaged reduced levels, so other packages test geometry without slide files.
``ImageSlide(path)`` does the same for a PNG/JPEG file; it is not in ``open_slide``'s default
registry (a PNG renamed ``.svs`` must be refused), only reachable with ``backend="image"``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from ._base import BaseReader, plausible_mpp
from ._sniff import _check_size, sniff
from .errors import InvalidRegionError, SlideError, UnreadableRegionError, UnsupportedFormatError
from .reader import Mpp, MppSource, RGBArray

__all__ = ["ArraySlide", "ImageSlide"]


def _halve(image: RGBArray) -> RGBArray:
    """2x2 area average; an odd last row/column is averaged with itself (ceil sizes)."""
    h, w = image.shape[:2]
    padded = np.pad(image, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge").astype(np.uint16)
    total = padded[0::2, 0::2] + padded[1::2, 0::2] + padded[0::2, 1::2] + padded[1::2, 1::2]
    return ((total + 2) // 4).astype(np.uint8)


class ArraySlide(BaseReader):
    """A slide over a numpy (height, width, 3) uint8 array; level 0 is the array itself.

    Parameters
    ----------
    array : (H, W, 3) uint8 array (a grey (H, W) array is repeated to RGB).
    mpp : µm per pixel (both axes), an :class:`Mpp`, or None for missing.
    levels : how many levels, each half the previous (ceil), by 2x2 area averaging.
    tile_size : what ``tile_size`` reports (there are no stored tiles).
    associated : named extra images (label, macro, thumbnail).
    """

    backend = "array"

    def __init__(
        self,
        array: npt.ArrayLike,
        *,
        mpp: float | Mpp | None = None,
        levels: int = 1,
        tile_size: tuple[int, int] = (256, 256),
        name: str = "array",
        vendor: str = "array",
        associated: dict[str, RGBArray] | None = None,
        objective_power: float | None = None,
    ) -> None:
        super().__init__(Path(name))
        self.vendor = vendor
        data = np.asarray(array)
        if data.ndim == 2:
            data = np.repeat(data[..., None], 3, axis=2)
        if data.ndim != 3 or data.shape[2] != 3 or data.dtype != np.uint8:
            raise InvalidRegionError(
                f"ArraySlide needs (H, W, 3) uint8, got {data.shape} {data.dtype}"
            )
        _check_size(self.path, data.shape[1], data.shape[0])
        if levels < 1:
            raise InvalidRegionError(f"levels must be >= 1, got {levels}")
        self._arrays: list[RGBArray] = [data]
        for _ in range(levels - 1):
            self._arrays.append(_halve(self._arrays[-1]))
        if isinstance(mpp, Mpp):
            self._mpp = mpp
        elif mpp is None:
            self._mpp = Mpp.missing()
        else:
            self._mpp, self.mpp_note = plausible_mpp(float(mpp), float(mpp), MppSource.VENDOR, name)
        self._tile_size = tile_size
        self._associated = dict(associated or {})
        self._objective = objective_power

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return tuple((a.shape[1], a.shape[0]) for a in self._arrays)

    @property
    def tile_size(self) -> tuple[int, int]:
        return self._tile_size

    def _declared_mpp(self) -> Mpp:
        return self._mpp

    @property
    def objective_power(self) -> float | None:
        return self._objective

    @property
    def associated_images(self) -> tuple[str, ...]:
        return tuple(sorted(self._associated))

    def read_associated(self, name: str) -> RGBArray:
        if name not in self._associated:
            raise InvalidRegionError(f"{self.path.name}: no associated image {name!r}")
        return self._associated[name].copy()

    def _read(self, x: int, y: int, level: int, w: int, h: int) -> RGBArray:
        ds = self.level_downsamples[level]
        lx, ly = int(x / ds), int(y / ds)
        source = self._arrays[level]
        height, width = source.shape[:2]
        out = np.full((h, w, 3), 255, np.uint8)
        x0, y0, x1, y1 = max(lx, 0), max(ly, 0), min(lx + w, width), min(ly + h, height)
        if x1 > x0 and y1 > y0:
            out[y0 - ly : y1 - ly, x0 - lx : x1 - lx] = source[y0:y1, x0:x1]
        return out


class ImageSlide(ArraySlide):
    """A PNG or JPEG file as a one-level slide (opt-in: ``open_slide(p, backend="image")``)."""

    backend = "image"

    @classmethod
    def can_open(cls, path: str | Path) -> bool:
        try:
            return sniff(path).kind in ("png", "jpeg")
        except SlideError:
            return False

    def __init__(self, path: str | Path) -> None:
        from PIL import Image

        found = sniff(path)
        if found.kind not in ("png", "jpeg"):
            raise UnsupportedFormatError(f"{Path(path).name}: not a PNG or JPEG image")
        try:
            with Image.open(found.file) as image:
                _check_size(found.file, *image.size)
                data = np.asarray(image.convert("RGB"))
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise UnreadableRegionError(f"{found.file.name}: cannot decode image ({exc})") from exc
        super().__init__(data, name=str(path), vendor=found.kind)
        self.path = Path(path)

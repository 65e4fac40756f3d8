"""Slide readers: one :class:`SlideReader` protocol, backends chosen by sniffing bytes.

``open_slide(path)`` checks the file's structure (bounded TIFF walk, DICOM header, declared
sizes) and then asks each backend of :data:`BACKENDS`, in order, whether it can open the bytes.
OpenSlide comes first (all vendor formats, DICOM WSI); tifffile takes what OpenSlide does not
detect (QPTIFF, OME-TIFF). ``ArraySlide`` wraps a numpy array for cheap tests.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ._base import MPP_PLAUSIBLE, BaseReader
from ._image import ArraySlide, ImageSlide
from ._openslide import OpenSlideReader
from ._sniff import sniff
from ._tifffile import TifffileReader
from .errors import (
    CorruptSlideError,
    InvalidRegionError,
    ParseTimeoutError,
    SlideError,
    SlideNotFoundError,
    SlideTooLargeError,
    UnreadableRegionError,
    UnsupportedFormatError,
)
from .geometry import Point, Size
from .reader import (
    MAX_LEVEL0_PIXELS,
    MAX_SIDE_PX,
    Mpp,
    MppSource,
    SlideInfo,
    SlideReader,
    StoredTiling,
)

__all__ = [
    "BACKENDS",
    "MAX_LEVEL0_PIXELS",
    "MAX_SIDE_PX",
    "MPP_PLAUSIBLE",
    "ArraySlide",
    "CorruptSlideError",
    "ImageSlide",
    "InvalidRegionError",
    "Mpp",
    "MppSource",
    "OpenSlideReader",
    "ParseTimeoutError",
    "Point",
    "Size",
    "SlideError",
    "SlideInfo",
    "SlideNotFoundError",
    "SlideReader",
    "SlideTooLargeError",
    "StoredTiling",
    "TifffileReader",
    "UnreadableRegionError",
    "UnsupportedFormatError",
    "backend_names",
    "describe",
    "open_slide",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Entry:
    name: str
    factory: Callable[[Path], BaseReader]
    can_open: Callable[[Path], bool]
    default: bool  # walked by open_slide without ``backend=``


BACKENDS: tuple[_Entry, ...] = (
    _Entry("openslide", OpenSlideReader, OpenSlideReader.can_open, True),
    _Entry("tifffile", TifffileReader, TifffileReader.can_open, True),
    _Entry("image", ImageSlide, ImageSlide.can_open, False),
)


def backend_names() -> tuple[str, ...]:
    """Names accepted by ``open_slide(..., backend=)`` and ``iain info --backend``."""
    return tuple(entry.name for entry in BACKENDS)


DEFAULT_OPEN_TIMEOUT_S = 30.0


def _open_with_timeout(entry: _Entry, path: Path, timeout_s: float) -> BaseReader:
    """Run a backend's constructor in a worker thread so a pathological file cannot hang us.

    Our own TIFF walk is bounded; this guards the libraries (OpenSlide, tifffile, pydicom). A
    constructor that finishes after the deadline has its reader closed by the worker. Library
    exceptions other than ours become :class:`CorruptSlideError` (never a bare traceback).
    """
    lock = threading.Lock()
    result: list[BaseReader] = []
    failure: list[BaseException] = []
    abandoned = False

    def work() -> None:
        try:
            reader = entry.factory(path)
        except BaseException as exc:  # handed to the caller below
            with lock:
                failure.append(exc)
            return
        with lock:
            if not abandoned:
                result.append(reader)
                return
        reader.close()

    worker = threading.Thread(target=work, name=f"open-{entry.name}", daemon=True)
    worker.start()
    worker.join(timeout_s)
    with lock:
        if not result and not failure:
            abandoned = True
            raise ParseTimeoutError(f"{path.name}: opening took longer than {timeout_s:g} s")
    if failure:
        exc = failure[0]
        if isinstance(exc, SlideError) or not isinstance(exc, Exception):
            raise exc
        raise CorruptSlideError(
            f"{path.name}: {entry.name} cannot open it ({type(exc).__name__}: {exc})"
        ) from exc
    return result[0]


def open_slide(
    path: str | os.PathLike[str],
    *,
    mpp_override: float | None = None,
    backend: str | None = None,
    timeout_s: float = DEFAULT_OPEN_TIMEOUT_S,
) -> SlideReader:
    """Open a slide file (or DICOM series directory) with the first backend that claims it.

    Raises a :class:`SlideError` subclass naming the file: not found, unsupported format,
    corrupt structure, declared size too large, opening slower than ``timeout_s``.
    ``mpp_override`` (µm/px) replaces the file's mpp.
    """
    p = Path(path)
    found = sniff(p)  # raises the specific structural error before any backend runs
    entries = [e for e in BACKENDS if (e.name == backend if backend else e.default)]
    if backend and not entries:
        raise UnsupportedFormatError(f"unknown backend {backend!r}; one of {backend_names()}")
    for entry in entries:
        if entry.can_open(p):
            reader = _open_with_timeout(entry, p, timeout_s)
            if mpp_override is not None:
                try:
                    reader.set_mpp_override(mpp_override)
                except SlideError:
                    reader.close()
                    raise
            logger.info("opened a %s slide with %s", reader.vendor, entry.name)  # no names: PHI
            return reader
    what = {"png": "a PNG image", "jpeg": "a JPEG image"}.get(found.kind, f"{found.vendor} file")
    via = f" by backend {backend!r}" if backend else ""
    raise UnsupportedFormatError(f"{p.name}: {what}, not a whole-slide format supported{via}")


def describe(reader: SlideReader) -> SlideInfo:
    """Everything ``iain info`` prints, as one frozen value."""
    levels = range(len(reader.level_dimensions))
    icc = reader.icc_profile
    return SlideInfo(
        path=str(reader.path),
        backend=reader.backend,
        vendor=reader.vendor,
        level_dimensions=tuple(reader.level_dimensions),
        level_downsamples=tuple(reader.level_downsamples),
        tile_size=(int(reader.tile_size[0]), int(reader.tile_size[1])),
        mpp=reader.mpp,
        objective_power=reader.objective_power,
        icc_profile_bytes=len(icc) if icc else 0,
        associated_images=tuple(reader.associated_images),
        stored_tiling=tuple(reader.stored_tiling(level) for level in levels),
        properties=dict(reader.properties),
        mpp_note=getattr(reader, "mpp_note", None),
    )

"""Raw JPEG frames of a DICOM WSI series, so level 0 can be copied verbatim.

OpenSlide decodes DICOM pixels but exposes no compressed frames. For each level stored as
TILED_FULL with the JPEG baseline transfer syntax, one frame is one tile in row-major order and
already a standalone JPEG (DICOM frames carry their own tables). Fragment positions are found
once per level by walking the encapsulation items on disk; each tile is then one ``os.pread``.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

from .errors import CorruptSlideError, InvalidRegionError, UnreadableRegionError
from .reader import StoredTiling

__all__ = ["DicomStoredTiles"]

logger = logging.getLogger(__name__)

JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
_WSI_SOP = "1.2.840.10008.5.1.4.1.1.77.1.6"
_ITEM, _SEQ_END = (0xFFFE, 0xE000), (0xFFFE, 0xE0DD)


@dataclass(frozen=True, slots=True)
class _Level:
    file: Path
    tiling: StoredTiling
    rgb: bool
    pixel_data_offset: int  # file offset of the first item (the Basic Offset Table)
    frames: int


# (7FE0,0010) OB, reserved, undefined length: encapsulated Pixel Data, explicit VR little endian.
_PIXEL_DATA_HEADER = b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff"


def _pixel_data_items_offset(path: Path) -> int | None:
    """File offset of the first item of the encapsulated Pixel Data, found by its header.

    pydicom does not defer undefined-length elements, so it cannot tell us where they start.
    """
    import mmap

    with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        at = mm.find(_PIXEL_DATA_HEADER)
        if at < 0 or mm[at + 12 : at + 16] != b"\xfe\xff\x00\xe0":
            return None
        return at + 12


def has_jfif(jpeg: bytes) -> bool:
    """True when the stream carries a JFIF APP0, which by definition means YCbCr components."""
    return jpeg[2:4] == b"\xff\xe0" and jpeg[6:11] == b"JFIF\x00"


class DicomStoredTiles:
    """Stored tiles of the DICOM instances beside ``file`` whose size matches a reader level."""

    def __init__(self, file: Path, level_dimensions: tuple[tuple[int, int], ...]) -> None:
        import pydicom

        self.path = file
        self._levels: dict[int, _Level] = {}
        self._positions: dict[int, list[tuple[int, int]]] = {}
        self._fds: dict[Path, int] = {}
        self._lock = threading.Lock()
        wanted = {dims: level for level, dims in enumerate(level_dimensions)}
        for entry in sorted(file.parent.iterdir())[:10_000]:
            if not entry.is_file():
                continue
            try:
                ds = pydicom.dcmread(entry, stop_before_pixels=True)
            except Exception:
                continue
            level = self._describe(entry, ds, wanted)
            if level is not None and wanted[(level[0], level[1])] not in self._levels:
                self._levels[wanted[(level[0], level[1])]] = level[2]

    @staticmethod
    def _describe(
        entry: Path, ds: object, wanted: dict[tuple[int, int], int]
    ) -> tuple[int, int, _Level] | None:
        from pydicom.dataset import FileDataset

        if not isinstance(ds, FileDataset) or str(ds.get("SOPClassUID", "")) != _WSI_SOP:
            return None
        if str(ds.file_meta.get("TransferSyntaxUID", "")) != JPEG_BASELINE:
            return None
        image_type = [str(v).upper() for v in ds.get("ImageType", [])]
        organisation = str(ds.get("DimensionOrganizationType", "")).upper()
        if "VOLUME" not in image_type or organisation != "TILED_FULL":
            return None
        if int(ds.get("SamplesPerPixel", 0)) != 3 or int(ds.get("NumberOfFocalPlanes", 1)) != 1:
            return None
        width, height = int(ds.TotalPixelMatrixColumns), int(ds.TotalPixelMatrixRows)
        if (width, height) not in wanted:
            return None
        tw, th = int(ds.Columns), int(ds.Rows)
        cols, rows = -(-width // tw), -(-height // th)
        frames = int(ds.get("NumberOfFrames", 1))
        if frames != cols * rows:
            return None
        tell = _pixel_data_items_offset(entry)
        if tell is None:
            return None
        rgb = str(ds.get("PhotometricInterpretation", "")) == "RGB"
        return (
            width,
            height,
            _Level(entry, StoredTiling(tw, th, "jpeg", cols, rows), rgb, int(tell), frames),
        )

    def tiling(self, level: int) -> StoredTiling | None:
        entry = self._levels.get(level)
        return entry.tiling if entry is not None else None

    def _frame_positions(self, level: int, entry: _Level) -> list[tuple[int, int]]:
        """(offset, length) of each frame's single fragment, walking the items once."""
        if level in self._positions:
            return self._positions[level]
        positions: list[tuple[int, int]] = []
        size = entry.file.stat().st_size
        with entry.file.open("rb") as fh:
            offset = entry.pixel_data_offset
            first = True
            while offset + 8 <= size:
                fh.seek(offset)
                group, elem, length = struct.unpack("<HHI", fh.read(8))
                if (group, elem) == _SEQ_END:
                    break
                if (group, elem) != _ITEM or offset + 8 + length > size:
                    raise UnreadableRegionError(
                        f"{entry.file.name}: broken encapsulated pixel data at offset {offset}"
                    )
                if not first:
                    positions.append((offset + 8, length))
                first = False
                offset += 8 + length
                if len(positions) > entry.frames:
                    break
        if len(positions) != entry.frames:
            raise UnreadableRegionError(
                f"{entry.file.name}: {len(positions)} JPEG fragments for {entry.frames} frames "
                "(missing or split frames)"
            )
        self._positions[level] = positions
        return positions

    def read(self, level: int, col: int, row: int) -> bytes:
        """Tile (col, row) of ``level``: the DICOM frame, a standalone JPEG."""
        from ._stored import ADOBE_APP14_RGB

        entry = self._levels.get(level)
        if entry is None:
            raise InvalidRegionError(f"{self.path.name}: level {level} has no stored JPEG frames")
        t = entry.tiling
        if not (0 <= col < t.columns and 0 <= row < t.rows):
            raise InvalidRegionError(
                f"tile ({col}, {row}) not in 0..{t.columns - 1} x 0..{t.rows - 1} of level {level}"
            )
        offset, length = self._frame_positions(level, entry)[row * t.columns + col]
        data = os.pread(self._fd(entry.file), length, offset)
        # DICOM pads fragments to even length with a trailing 0x00 after EOI; strip it.
        if data.endswith(b"\xff\xd9\x00"):
            data = data[:-1]
        if not data.startswith(b"\xff\xd8"):
            raise CorruptSlideError(f"{entry.file.name}: frame is not a JPEG stream")
        if entry.rgb and not has_jfif(data) and ADOBE_APP14_RGB[:11] not in data[:64]:
            data = data[:2] + ADOBE_APP14_RGB + data[2:]
        return data

    def ycbcr_labelled_rgb(self) -> bool:
        """True when level 0 says RGB but its JPEG frames are JFIF (YCbCr).

        Some converters (wsi2dcm, as in the CMU-1 sample series) write such files; OpenSlide
        trusts the header and returns YCbCr values as RGB, so the reader converts them back.
        """
        entry = self._levels.get(0)
        if entry is None or not entry.rgb:
            return False
        try:
            offset, length = self._frame_positions(0, entry)[0]
        except UnreadableRegionError:
            return False
        with entry.file.open("rb") as fh:
            fh.seek(offset)
            return has_jfif(fh.read(min(length, 64)))

    def _fd(self, file: Path) -> int:
        fd = self._fds.get(file)
        if fd is None:
            with self._lock:
                fd = self._fds.get(file)
                if fd is None:
                    fd = self._fds[file] = os.open(file, os.O_RDONLY)
        return fd

    def close(self) -> None:
        """Close the per-level file descriptors."""
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            os.close(fd)

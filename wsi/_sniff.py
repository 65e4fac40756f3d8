"""Format detection from bytes, and a bounded structural check of TIFF files.

Every backend's ``can_open`` goes through :func:`sniff`, which never trusts the extension and
never hands a library a file whose declared geometry could make it allocate exabytes or loop.

The TIFF walk is bounded by construction (at most ``MAX_IFDS`` directories, ``MAX_TAGS`` tags
each, every offset checked against the file size, loops detected), so parsing cannot hang.
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import (
    CorruptSlideError,
    SlideNotFoundError,
    SlideTooLargeError,
    UnsupportedFormatError,
)
from .reader import MAX_LEVEL0_PIXELS, MAX_SIDE_PX

__all__ = ["IfdInfo", "SniffResult", "sniff", "sniff_tiff"]

MAX_IFDS = 1024  # directories in the main chain plus SubIFDs
MAX_TAGS = 4096  # tags in one directory (tifffile calls more than this "suspicious")
MAX_TILES = 1 << 24  # tiles in one level: 16.7 M x 8 B offsets is the most we read at open
MAX_DIR_ENTRIES = 10_000  # files looked at when a directory is given
DICOM_WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"

# TIFF field type -> byte size
_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}
_TYPE_SIZES.update({16: 8, 17: 8, 18: 8})
_INT_DTYPES = {1: "u1", 3: "u2", 4: "u4", 13: "u4", 16: "u8", 18: "u8"}
# Compressions libtiff / imagecodecs decode: none, CCITT RLE/G3/G4, LZW, old and new JPEG,
# Deflate (8, 32946), PackBits, Aperio JPEG 2000 (33003, 33004, 33005, 33007), JPEG 2000, LERC,
# lossy JPEG, LZMA, Zstd and WebP (old and new codes), PNG, JPEG XR, JPEG XL (50002, 52546).
KNOWN_COMPRESSIONS = frozenset(
    {1, 2, 3, 4, 5, 6, 7, 8, 32773, 32946, 33003, 33004, 33005, 33007, 34712, 34887, 34892}
    | {34925, 34926, 34927, 34933, 34934, 50000, 50001, 50002, 52546}
)

_TAG_WIDTH, _TAG_LENGTH, _TAG_COMPRESSION, _TAG_PHOTOMETRIC = 256, 257, 259, 262
_TAG_DESCRIPTION, _TAG_MAKE, _TAG_SOFTWARE, _TAG_XMP = 270, 271, 305, 700
_TAG_STRIP_OFFSETS, _TAG_STRIP_BYTES, _TAG_ROWS_PER_STRIP = 273, 279, 278
_TAG_TILE_WIDTH, _TAG_TILE_LENGTH, _TAG_TILE_OFFSETS, _TAG_TILE_BYTES = 322, 323, 324, 325
_TAG_SUBIFDS, _TAG_NDPI = 330, 65420


@dataclass(frozen=True, slots=True)
class IfdInfo:
    """What the bounded walk learned about one TIFF directory."""

    offset: int
    width: int
    height: int
    tile_width: int  # 0 when stored in strips
    tile_height: int
    compression: int
    photometric: int
    description: str


@dataclass(frozen=True, slots=True)
class SniffResult:
    """``kind`` is ``tiff``, ``dicom``, ``mirax``, ``png`` or ``jpeg``; ``file`` is what to open."""

    kind: str
    vendor: str
    file: Path
    ifds: tuple[IfdInfo, ...] = field(default_factory=tuple)


def _head(path: Path, size: int) -> bytes:
    with path.open("rb") as fh:
        return fh.read(size)


def _is_dicom(path: Path) -> bool:
    try:
        head = _head(path, 132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _pick_from_directory(path: Path) -> Path:
    """A directory is a DICOM series or holds a MIRAX index: pick the file to open."""
    try:
        entries = sorted(p for _, p in zip(range(MAX_DIR_ENTRIES), path.iterdir(), strict=False))
    except OSError as exc:
        raise UnsupportedFormatError(
            f"{path.name}: cannot list directory ({exc.strerror})"
        ) from exc
    dicom = [entry for entry in entries if entry.is_file() and _is_dicom(entry)]
    for entry in dicom:  # prefer a whole-slide instance over e.g. a stray SR or KO object
        if DICOM_WSI_SOP_CLASS.encode() in _head(entry, 4096):
            return entry
    if dicom:
        return dicom[0]
    # MIRAX: an index file (INI text, "[GENERAL]") beside a data folder of the same stem. Given
    # the folder, its index is the sibling OpenSlide expects; given their parent, the pair.
    sibling = path.parent / f"{path.name}.mrxs"
    if sibling.is_file() and _head(sibling, 9) == b"[GENERAL]":
        return sibling
    for entry in entries:
        if entry.is_file() and _head(entry, 9) == b"[GENERAL]" and (path / entry.stem).is_dir():
            return entry
    raise UnsupportedFormatError(f"{path.name}: directory holds no DICOM or MIRAX slide files")


# (resolved path, size, mtime_ns) -> result: open_slide, can_open and the constructor all sniff.
_cache: dict[tuple[str, int, int], SniffResult] = {}
_CACHE_SIZE = 64


def sniff(path: str | os.PathLike[str]) -> SniffResult:
    """Identify a slide from its bytes; raise a :class:`SlideError` subclass when we cannot.

    TIFF files are also structurally checked (sizes, offsets, loops) before any library sees them.
    Successful results are cached per (file, size, mtime), so repeated calls cost one ``stat``.
    """
    p = Path(path)
    if not p.exists():
        raise SlideNotFoundError(f"{p.name}: no such file or directory")
    if p.is_dir():
        p = _pick_from_directory(p)
    try:
        st = p.stat()
    except OSError as exc:
        raise UnsupportedFormatError(f"{p.name}: cannot read ({exc.strerror})") from exc
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    found = _cache.get(key)
    if found is None:
        found = _sniff_file(p)
        if len(_cache) >= _CACHE_SIZE:
            _cache.pop(next(iter(_cache)))
        _cache[key] = found
    return found


def _sniff_file(p: Path) -> SniffResult:
    try:
        head = _head(p, 132)
    except OSError as exc:
        raise UnsupportedFormatError(f"{p.name}: cannot read ({exc.strerror})") from exc
    if not head:
        raise UnsupportedFormatError(f"{p.name}: empty file")
    if head[:4] in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"):
        ifds, extra = sniff_tiff(p)
        return SniffResult("tiff", _tiff_vendor(ifds, extra), p, ifds)
    if len(head) == 132 and head[128:132] == b"DICM":
        _check_dicom(p)
        return SniffResult("dicom", "dicom", p)
    if head.startswith(b"[GENERAL]"):
        return SniffResult("mirax", "mirax", p)
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return SniffResult("png", "image", p)
    if head.startswith(b"\xff\xd8\xff"):
        return SniffResult("jpeg", "image", p)
    raise UnsupportedFormatError(f"{p.name}: not a slide format we recognise (header {head[:4]!r})")


def _check_dicom(path: Path) -> None:
    """Reject non-WSI DICOM objects and absurd matrix sizes before OpenSlide sees them."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, EOFError, struct.error) as exc:
        raise CorruptSlideError(f"{path.name}: unreadable DICOM header ({exc})") from exc
    sop = str(ds.get("SOPClassUID", ""))
    if sop != DICOM_WSI_SOP_CLASS:
        raise UnsupportedFormatError(
            f"{path.name}: DICOM object is not a whole-slide image ({sop})"
        )
    width = int(ds.get("TotalPixelMatrixColumns", ds.get("Columns", 0)) or 0)
    height = int(ds.get("TotalPixelMatrixRows", ds.get("Rows", 0)) or 0)
    _check_size(path, width, height)


def _check_size(path: Path, width: int, height: int) -> None:
    if width <= 0 or height <= 0:
        raise CorruptSlideError(f"{path.name}: image has a zero size ({width} x {height} px)")
    if width > MAX_SIDE_PX or height > MAX_SIDE_PX or width * height > MAX_LEVEL0_PIXELS:
        raise SlideTooLargeError(
            f"{path.name}: declared size {width} x {height} px exceeds the limit "
            f"({MAX_SIDE_PX} px a side, {MAX_LEVEL0_PIXELS / 1e9:.1f} gigapixels)"
        )


class _TiffWalker:
    """Reads TIFF directories with explicit bounds; every failure is a CorruptSlideError."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.extra: dict[str, str] = {}
        self.fd = os.open(path, os.O_RDONLY)
        self.size = os.fstat(self.fd).st_size
        head = os.pread(self.fd, 16, 0)
        self.order = "<" if head[:2] == b"II" else ">"
        magic = struct.unpack(self.order + "H", head[2:4])[0]
        self.big = magic == 43
        if self.big:
            if len(head) < 16:
                raise CorruptSlideError(f"{path.name}: truncated BigTIFF header")
            self.first = struct.unpack(self.order + "Q", head[8:16])[0]
        else:
            if len(head) < 8:
                raise CorruptSlideError(f"{path.name}: truncated TIFF header")
            self.first = struct.unpack(self.order + "I", head[4:8])[0]

    def close(self) -> None:
        os.close(self.fd)

    def read(self, offset: int, size: int, what: str) -> bytes:
        if offset < 0 or offset + size > self.size:
            raise CorruptSlideError(
                f"{self.path.name}: {what} at offset {offset} (+{size} B) lies past the end of "
                f"the file ({self.size} B): truncated or corrupt"
            )
        return os.pread(self.fd, size, offset)

    def walk(self) -> tuple[IfdInfo, ...]:
        """Main chain first, then SubIFD chains; a chain revisiting itself is a loop.

        SubIFDs may be listed in the tag *and* chained to each other (tifffile, libtiff do
        both), so reaching a directory another chain already visited just ends this chain.
        """
        seen: set[int] = set()
        pending = [self.first]
        found: list[IfdInfo] = []
        while pending:
            offset = pending.pop(0)
            chain: set[int] = set()
            while offset and offset not in seen:
                chain.add(offset)
                seen.add(offset)
                if len(seen) > MAX_IFDS:
                    raise CorruptSlideError(
                        f"{self.path.name}: more than {MAX_IFDS} TIFF directories"
                    )
                info, offset, subifds = self._ifd(offset, first=not found)
                found.append(info)
                pending.extend(subifds)
            if offset and offset in chain:
                raise CorruptSlideError(
                    f"{self.path.name}: TIFF directory chain loops back to offset {offset}"
                )
        return tuple(found)

    def _ifd(self, offset: int, *, first: bool) -> tuple[IfdInfo, int, list[int]]:
        o = self.order
        count_fmt, entry_size, value_size = ("Q", 20, 8) if self.big else ("H", 12, 4)
        count_size = struct.calcsize(count_fmt)
        count = struct.unpack(o + count_fmt, self.read(offset, count_size, "TIFF directory"))[0]
        if not 0 < count <= MAX_TAGS:
            raise CorruptSlideError(
                f"{self.path.name}: TIFF directory at offset {offset} claims {count} tags: corrupt"
            )
        block = self.read(offset + count_size, count * entry_size + value_size, "TIFF directory")
        entry_fmt = o + ("HHQ8s" if self.big else "HHI4s")
        tags: dict[int, tuple[int, int, bytes, int]] = {}
        for i in range(count):
            tag, typ, n, raw = struct.unpack_from(entry_fmt, block, i * entry_size)
            tags.setdefault(tag, (typ, n, raw, offset + count_size + i * entry_size))  # first wins
        nxt = struct.unpack_from(o + ("Q" if self.big else "I"), block, count * entry_size)[0]

        def values(tag: int) -> np.ndarray | None:
            if tag not in tags:
                return None
            typ, n, raw, _ = tags[tag]
            if typ not in _INT_DTYPES:
                raise CorruptSlideError(
                    f"{self.path.name}: TIFF tag {tag} at offset {offset} has invalid type {typ}"
                )
            nbytes = _TYPE_SIZES[typ] * n
            data = (
                raw[:nbytes]
                if nbytes <= value_size
                else self.read(
                    struct.unpack(o + ("Q" if self.big else "I"), raw)[0], nbytes, f"TIFF tag {tag}"
                )
            )
            return np.frombuffer(data, dtype=o + _INT_DTYPES[typ]).astype(np.uint64)

        def scalar(tag: int, default: int) -> int:
            vals = values(tag)
            return default if vals is None or vals.size == 0 else int(vals[0])

        def text(tag: int) -> str:
            if tag not in tags:
                return ""
            typ, n, raw, _ = tags[tag]
            if typ not in (1, 2, 7) or n > 16 << 20:
                return ""
            data = (
                raw[:n]
                if n <= value_size
                else self.read(
                    struct.unpack(o + ("Q" if self.big else "I"), raw)[0], n, f"TIFF tag {tag}"
                )
            )
            return data.split(b"\0", 1)[0].decode("latin-1")

        if _TAG_WIDTH not in tags or _TAG_LENGTH not in tags:
            raise CorruptSlideError(
                f"{self.path.name}: TIFF directory at offset {offset} has no image width/length"
            )
        width, height = scalar(_TAG_WIDTH, 0), scalar(_TAG_LENGTH, 0)
        _check_size(self.path, width, height)
        compression = scalar(_TAG_COMPRESSION, 1)
        if compression not in KNOWN_COMPRESSIONS:
            raise UnsupportedFormatError(
                f"{self.path.name}: unsupported TIFF compression {compression}"
            )
        tile_w, tile_h = scalar(_TAG_TILE_WIDTH, 0), scalar(_TAG_TILE_LENGTH, 0)
        if tile_w or tile_h:
            if not (0 < tile_w <= 65536 and 0 < tile_h <= 65536):
                raise CorruptSlideError(
                    f"{self.path.name}: invalid tile size {tile_w} x {tile_h} at offset {offset}"
                )
            expected = math.ceil(width / tile_w) * math.ceil(height / tile_h)
            if expected > MAX_TILES:
                raise SlideTooLargeError(
                    f"{self.path.name}: {expected} tiles of {tile_w} x {tile_h} px in one level "
                    f"(limit {MAX_TILES})"
                )
            self._check_offsets(
                values(_TAG_TILE_OFFSETS), values(_TAG_TILE_BYTES), expected, "tile"
            )
        else:
            self._check_offsets(values(_TAG_STRIP_OFFSETS), values(_TAG_STRIP_BYTES), 1, "strip")
        description = text(_TAG_DESCRIPTION) if first else ""
        info = IfdInfo(
            offset,
            width,
            height,
            tile_w,
            tile_h,
            compression,
            scalar(_TAG_PHOTOMETRIC, 2),
            description,
        )
        sub_values = values(_TAG_SUBIFDS)
        subifds = [] if sub_values is None else [int(v) for v in sub_values]
        if first:
            self.extra = {
                "make": text(_TAG_MAKE),
                "software": text(_TAG_SOFTWARE),
                "xmp": text(_TAG_XMP)[:65536],
                "ndpi": "1" if _TAG_NDPI in tags else "",
            }
        return info, nxt, subifds

    def _check_offsets(
        self, offsets: np.ndarray | None, counts: np.ndarray | None, expected: int, what: str
    ) -> None:
        if offsets is None or counts is None:
            raise CorruptSlideError(f"{self.path.name}: image data has no {what} offsets")
        if offsets.size != counts.size or offsets.size < expected:
            raise CorruptSlideError(
                f"{self.path.name}: {offsets.size} {what} offsets for {expected} {what}s"
            )
        ends = offsets + counts
        bad = np.flatnonzero((counts > 0) & (ends > self.size))
        if bad.size:
            i = int(bad[0])
            raise CorruptSlideError(
                f"{self.path.name}: {what} {i} at offset {int(offsets[i])} (+{int(counts[i])} B) "
                f"lies past the end of the file ({self.size} B); {bad.size} such {what}s"
            )


def sniff_tiff(path: Path) -> tuple[tuple[IfdInfo, ...], dict[str, str]]:
    """Walk every TIFF directory with bounds; raise CorruptSlideError / SlideTooLargeError.

    Returns the directories and the first one's vendor markers (make, software, xmp, ndpi).
    """
    walker = _TiffWalker(path)
    try:
        if walker.first == 0:
            raise CorruptSlideError(f"{path.name}: TIFF has no image directory")
        return walker.walk(), walker.extra
    finally:
        walker.close()


def _tiff_vendor(ifds: tuple[IfdInfo, ...], extra: dict[str, str]) -> str:
    """Vendor from the first directory's markers, as OpenSlide's detectors look at them."""
    desc = ifds[0].description
    if desc.startswith("Aperio"):
        return "aperio"
    if extra.get("ndpi"):
        return "hamamatsu"
    if extra.get("software", "").startswith("Philips"):
        return "philips"
    if "<scn" in desc and "leica" in desc.lower():
        return "leica"
    if "iScan" in extra.get("xmp", ""):
        return "ventana"
    if "<OME" in desc:
        return "ome"
    if "PerkinElmer-QPI" in desc:
        return "qptiff"
    return "generic-tiff" if ifds[0].tile_width else "tiff"

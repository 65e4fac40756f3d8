"""What leaves a centre: a *derived* pyramid, de-identified by construction.

A shared slide is never the source store. :func:`derive_shared_pyramid` builds a new store that
holds only

- the pixel levels ``0..n`` (chunk files hard-linked, or copied byte for byte; JPEG headers are
  scanned and comment / EXIF / XMP / vendor APPn segments and trailing bytes dropped, because a
  tile copied verbatim from a scanner file may carry them; pixels are never decoded);
- metadata rebuilt from an ALLOW-LIST (geometry, tile size, mpp, objective power, ICC profile),
  with the slide's name replaced by the share's pseudonym.

A share may be limited to a REGION (level-0 pixels): only the tiles meeting it are written, and
the tiles it crosses are decoded once and whitened outside it, at every level, so the rest of the
slide is not visible even at low resolution.

Nothing else is read into the output: not the ``associated/`` group (label, macro, thumbnail),
not ``labels/``, not any attribute of the source (file name, sha256, dates, barcodes, vendor
properties, operator). Unknown keys are dropped, never copied, so a converter that adds a new
field cannot leak it. The output appears atomically (temporary directory, then rename).
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import re
import shutil
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np
from PIL import Image

from share.federation_errors import (
    DerivedExistsError,
    InvalidPseudonymError,
    InvalidRegionError,
    SourcePyramidError,
)
from tiling.layout import ASSOCIATED_GROUP, IAIN_ATTR, JPEG_CODEC_NAME, LABELS_GROUP, chunk_key

__all__ = [
    "PSEUDONYM_PATTERN",
    "SharedPyramidInfo",
    "SharedRegion",
    "derive_shared_pyramid",
    "describe_shared",
    "read_shared_pyramid_info",
    "shared_tile_path",
    "strip_jpeg_metadata",
]

logger = logging.getLogger(__name__)

PSEUDONYM_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")
_ZARR_JSON = "zarr.json"
_ALLOWED_CODECS = {"transpose", JPEG_CODEC_NAME, "bytes"}
_SUBSAMPLINGS = {"444", "422", "420", "411", "440"}  # JPEG chroma subsampling tokens
_ICC_KEY = "icc_profile_base64"  # as tiling.convert writes it
_RGB_CHANNELS = (("red", "FF0000"), ("green", "00FF00"), ("blue", "0000FF"))


@dataclass(frozen=True, slots=True)
class SharedRegion:
    """A rectangle of the slide in level-0 pixels: top-left (x, y), size (width, height)."""

    x: int
    y: int
    width: int
    height: int

    def __post_init__(self) -> None:
        if self.x < 0 or self.y < 0 or self.width <= 0 or self.height <= 0:
            raise InvalidRegionError(f"region {self.as_list()} must have x, y >= 0 and size > 0")

    def as_list(self) -> list[int]:
        return [self.x, self.y, self.width, self.height]

    def at_level(self, level: int) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) at ``level``, rounded outwards (x1, y1 exclusive)."""
        scale = 2**level
        return (
            self.x // scale,
            self.y // scale,
            -(-(self.x + self.width) // scale),
            -(-(self.y + self.height) // scale),
        )


@dataclass(frozen=True, slots=True)
class SharedPyramidInfo:
    """Everything a recipient may know about a shared slide; sizes (width, height) in pixels."""

    pseudonym: str
    width: int
    height: int
    tile_width: int
    tile_height: int
    level_count: int
    mpp_x: float | None
    mpp_y: float | None
    objective_power: float | None
    region: SharedRegion | None = None

    def as_json(self) -> dict[str, Any]:
        """THE allow-list: the only slide facts that leave a centre (the store's metadata and
        the peer API both print exactly this; the ICC profile is added beside it in the store)."""
        return {
            "pseudonym": self.pseudonym,
            "width": self.width,
            "height": self.height,
            "tile_width": self.tile_width,
            "tile_height": self.tile_height,
            "level_count": self.level_count,
            "mpp_x": self.mpp_x,
            "mpp_y": self.mpp_y,
            "objective_power": self.objective_power,
            "region": self.region.as_list() if self.region is not None else None,
        }

    def grid(self, level: int) -> tuple[int, int]:
        """(columns, rows) of tiles at ``level`` (DeepZoom ceil-halving, as tiling/layout.py)."""
        width, height = self.width, self.height
        for _ in range(level):
            width, height = math.ceil(width / 2), math.ceil(height / 2)
        return math.ceil(width / self.tile_width), math.ceil(height / self.tile_height)


def derive_shared_pyramid(
    source_store: Path | str,
    out: Path | str,
    *,
    pseudonym: str,
    region: SharedRegion | None = None,
) -> Path:
    """Write the de-identified copy of the IAIN pyramid ``source_store`` at ``out``.

    ``out`` must not exist; it appears complete or not at all. Chunk files are hard-linked when
    source and output share a file system and the JPEG needs no cleaning, else copied.
    With ``region``, only that part of the slide is shared. Returns ``out``.
    """
    source = Path(source_store)
    target = Path(out)
    if not PSEUDONYM_PATTERN.fullmatch(pseudonym):
        raise InvalidPseudonymError("pseudonym must match [A-Za-z0-9._-]{1,64}")
    if target.exists():
        raise DerivedExistsError(f"derived pyramid output already exists: {target.name}")
    root = _read_json(source / _ZARR_JSON, "root zarr.json")
    levels = _level_paths(root)
    arrays = [_read_level(source, path) for path in levels]
    info = _allowed_info(root, arrays, pseudonym)
    if region is not None:
        if region.x + region.width > info.width or region.y + region.height > info.height:
            raise InvalidRegionError(
                f"region {region.as_list()} outside the slide ({info.width}x{info.height})"
            )
        info = replace(info, region=region)

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        _write_json(tmp / _ZARR_JSON, _root_metadata(info, root))
        counts = [0, 0, 0]
        for level, array in enumerate(arrays):
            (tmp / str(level)).mkdir()
            _write_json(tmp / str(level) / _ZARR_JSON, _array_metadata(array))
            _copy_chunks(source, tmp, level, info, counts)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info(
        "derived shared pyramid %s: %d levels, %d chunks linked, %d cleaned, %d cropped",
        pseudonym,
        len(arrays),
        *counts,
    )
    return target


def describe_shared(
    source_store: Path | str, *, pseudonym: str, region: SharedRegion | None = None
) -> SharedPyramidInfo:
    """What :func:`derive_shared_pyramid` would tell a recipient about ``source_store``, without
    writing anything: the same validation and the same allow-list (teaching collections show it)."""
    if not PSEUDONYM_PATTERN.fullmatch(pseudonym):
        raise InvalidPseudonymError("pseudonym must match [A-Za-z0-9._-]{1,64}")
    source = Path(source_store)
    root = _read_json(source / _ZARR_JSON, "root zarr.json")
    arrays = [_read_level(source, path) for path in _level_paths(root)]
    return replace(_allowed_info(root, arrays, pseudonym), region=region)


def read_shared_pyramid_info(store: Path | str) -> SharedPyramidInfo:
    """Read back the allow-listed metadata of a derived pyramid (what a peer may be told)."""
    root = _read_json(Path(store) / _ZARR_JSON, "root zarr.json")
    attrs = root.get("attributes", {}).get(IAIN_ATTR)
    if not isinstance(attrs, dict) or not isinstance(attrs.get("pseudonym"), str):
        raise SourcePyramidError("not a derived (shared) pyramid: no pseudonym")
    try:
        return SharedPyramidInfo(
            pseudonym=attrs["pseudonym"],
            width=int(attrs["width"]),
            height=int(attrs["height"]),
            tile_width=int(attrs["tile_width"]),
            tile_height=int(attrs["tile_height"]),
            level_count=int(attrs["level_count"]),
            mpp_x=_positive(attrs.get("mpp_x")),
            mpp_y=_positive(attrs.get("mpp_y")),
            objective_power=_positive(attrs.get("objective_power")),
            region=SharedRegion(*(int(v) for v in attrs["region"]))
            if attrs.get("region")
            else None,
        )
    except (KeyError, TypeError, ValueError, InvalidRegionError) as exc:
        raise SourcePyramidError(f"derived pyramid metadata incomplete: {exc}") from exc


def shared_tile_path(store: Path | str, level: int, col: int, row: int) -> Path:
    """File of tile (col, row) at ``level`` in a derived pyramid (it may be absent: fill)."""
    return Path(store) / chunk_key(level, col, row)


def strip_jpeg_metadata(data: bytes) -> bytes:
    """Return ``data`` without COM, EXIF/XMP/other APPn segments, JFIF thumbnails or trailing bytes.

    Kept: APP0 JFIF without thumbnail, APP2 ICC profile, APP14 Adobe (colour transform), and every
    segment needed to decode. Raises :class:`SourcePyramidError` if ``data`` is not a JPEG.
    """
    size = len(data)
    if data[:2] != b"\xff\xd8":
        raise SourcePyramidError("chunk is not a JPEG (no SOI marker)")
    out = bytearray(b"\xff\xd8")
    pos = 2
    while True:
        if pos + 2 > size or data[pos] != 0xFF:
            raise SourcePyramidError(f"corrupt JPEG chunk: no marker at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == 0xD9:  # EOI: anything after it is dropped
            out += b"\xff\xd9"
            return bytes(out)
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # standalone markers
            out += data[pos : pos + 2]
            pos += 2
            continue
        if pos + 4 > size:
            raise SourcePyramidError("corrupt JPEG chunk: truncated segment header")
        end = pos + 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if end > size:
            raise SourcePyramidError("corrupt JPEG chunk: segment runs past the end")
        if _keep_segment(marker, data[pos + 4 : end]):
            out += data[pos:end]
        pos = end
        if marker == 0xDA:  # start of scan: copy entropy-coded data up to the next real marker
            scan_end = _scan_end(data, pos)
            out += data[pos:scan_end]
            pos = scan_end


def _keep_segment(marker: int, payload: bytes) -> bool:
    if marker == 0xFE:  # COM
        return False
    if marker == 0xE0:  # APP0: JFIF without thumbnail only (JFXX carries thumbnails)
        return payload[:5] == b"JFIF\x00" and len(payload) >= 14 and payload[12:14] == b"\0\0"
    if marker == 0xE2:
        return payload[:12] == b"ICC_PROFILE\x00"
    if marker == 0xEE:
        return payload[:5] == b"Adobe"
    return not 0xE0 <= marker <= 0xEF


def _scan_end(data: bytes, pos: int) -> int:
    size = len(data)
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= size:
            raise SourcePyramidError("corrupt JPEG chunk: scan data without EOI")
        following = data[pos + 1]
        if following == 0x00 or 0xD0 <= following <= 0xD7 or following == 0xFF:
            pos += 1 if following == 0xFF else 2
            continue
        return pos


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        value = json.loads(path.read_bytes())
    except FileNotFoundError as exc:
        raise SourcePyramidError(f"not an IAIN pyramid: {what} missing") from exc
    except (OSError, ValueError) as exc:
        raise SourcePyramidError(f"unreadable {what}: {exc}") from exc
    if not isinstance(value, dict):
        raise SourcePyramidError(f"{what} is not a JSON object")
    return value


def _write_json(path: Path, value: dict[str, Any]) -> None:
    path.write_text(json.dumps(value, indent=1, sort_keys=True), encoding="utf-8")


def _level_paths(root: dict[str, Any]) -> list[str]:
    """Level array paths from the OME multiscales: exactly "0", "1", ... (no other path)."""
    try:
        datasets = root["attributes"]["ome"]["multiscales"][0]["datasets"]
        paths = [dataset["path"] for dataset in datasets]
    except (KeyError, IndexError, TypeError) as exc:
        raise SourcePyramidError("not an IAIN pyramid: no OME multiscales datasets") from exc
    if not paths or paths != [str(level) for level in range(len(paths))]:
        raise SourcePyramidError("multiscales datasets must be the levels 0..n in order")
    return paths


def _read_level(source: Path, path: str) -> dict[str, Any]:
    """Validate a level's array metadata; returns it with ``shape`` and ``chunks`` as ints."""
    meta = _read_json(source / path / _ZARR_JSON, f"level {path} zarr.json")
    shape = meta.get("shape")
    if (
        meta.get("node_type") != "array"
        or meta.get("data_type") != "uint8"
        or not _dims(shape)
        or shape[0] != 3
    ):
        raise SourcePyramidError(f"level {path} is not a (3, y, x) uint8 array")
    grid, encoding = meta.get("chunk_grid"), meta.get("chunk_key_encoding")
    config = grid.get("configuration") if isinstance(grid, dict) else None
    chunks = config.get("chunk_shape") if isinstance(config, dict) else None
    if not isinstance(grid, dict) or grid.get("name") != "regular" or not _dims(chunks):
        raise SourcePyramidError(f"level {path}: no regular chunk grid")
    if chunks[0] != 3:
        raise SourcePyramidError(f"level {path}: chunks must be (3, tile_h, tile_w)")
    if (
        not isinstance(encoding, dict)
        or encoding.get("name") != "default"
        or (encoding.get("configuration") or {}).get("separator", "/") != "/"
    ):
        raise SourcePyramidError(f"level {path}: chunk keys must be default with '/'")
    codecs = meta.get("codecs")
    if not isinstance(codecs, list) or not any(
        isinstance(codec, dict) and codec.get("name") == JPEG_CODEC_NAME for codec in codecs
    ):
        raise SourcePyramidError(f"level {path}: chunks are not {JPEG_CODEC_NAME}")
    if meta.get("storage_transformers"):
        raise SourcePyramidError(f"level {path}: storage transformers are not supported")
    return meta


def _dims(value: object) -> TypeGuard[list[int]]:
    """Three positive integers (never strings: nothing but numbers is copied)."""
    return (
        isinstance(value, list)
        and len(value) == 3
        and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in value)
    )


def _positive(value: object) -> float | None:
    """A finite positive number, else None (strings, booleans and junk are never copied)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) and number > 0 else None


def _allowed_info(
    root: dict[str, Any], arrays: list[dict[str, Any]], pseudonym: str
) -> SharedPyramidInfo:
    attrs = root.get("attributes", {}).get(IAIN_ATTR)
    iain: dict[str, Any] = attrs if isinstance(attrs, dict) else {}
    _, height, width = (int(n) for n in arrays[0]["shape"])
    _, tile_height, tile_width = (
        int(n) for n in arrays[0]["chunk_grid"]["configuration"]["chunk_shape"]
    )
    mpp_x, mpp_y = _positive(iain.get("mpp_x")), _positive(iain.get("mpp_y"))
    if mpp_x is None or mpp_y is None:
        mpp_x, mpp_y = _ome_mpp(root)
    objective = _positive(iain.get("objective_power"))
    if objective is None:
        objective = _positive(iain.get("objective"))
    return SharedPyramidInfo(
        pseudonym=pseudonym,
        width=width,
        height=height,
        tile_width=tile_width,
        tile_height=tile_height,
        level_count=len(arrays),
        mpp_x=mpp_x,
        mpp_y=mpp_y,
        objective_power=objective,
    )


def _ome_mpp(root: dict[str, Any]) -> tuple[float | None, float | None]:
    """Level-0 (x, y) micrometres per pixel from the OME scale transform, if in micrometres."""
    try:
        multiscale = root["attributes"]["ome"]["multiscales"][0]
        units = [axis.get("unit") for axis in multiscale["axes"]]
        scale = multiscale["datasets"][0]["coordinateTransformations"][0]["scale"]
    except (KeyError, IndexError, TypeError, AttributeError):
        return None, None
    if len(scale) != 3 or units[1:] != ["micrometer", "micrometer"]:
        return None, None
    return _positive(scale[2]), _positive(scale[1])


def _root_metadata(info: SharedPyramidInfo, source_root: dict[str, Any]) -> dict[str, Any]:
    has_mpp = info.mpp_x is not None and info.mpp_y is not None
    unit = {"unit": "micrometer"} if has_mpp else {}
    datasets = []
    for level in range(info.level_count):
        factor = float(2**level)
        scale = [1.0, (info.mpp_y or 1.0) * factor, (info.mpp_x or 1.0) * factor]
        datasets.append(
            {"path": str(level), "coordinateTransformations": [{"type": "scale", "scale": scale}]}
        )
    iain: dict[str, Any] = {"derived": "shared", **info.as_json()}
    if info.region is None:
        del iain["region"]  # whole-slide shares carry no region key in the store
    icc = source_root.get("attributes", {}).get(IAIN_ATTR, {}).get(_ICC_KEY)
    if isinstance(icc, str) and re.fullmatch(r"[A-Za-z0-9+/=]{1,4000000}", icc):
        iain[_ICC_KEY] = icc  # base64 colour profile: allowed (calibration, not identity)
    return {
        "zarr_format": 3,
        "node_type": "group",
        "attributes": {
            "ome": {
                "version": "0.5",
                "multiscales": [
                    {
                        "name": info.pseudonym,
                        "axes": [
                            {"name": "c", "type": "channel"},
                            {"name": "y", "type": "space", **unit},
                            {"name": "x", "type": "space", **unit},
                        ],
                        "datasets": datasets,
                    }
                ],
                "omero": {
                    "channels": [
                        {
                            "label": label,
                            "color": color,
                            "active": True,
                            "window": {"min": 0, "max": 255, "start": 0, "end": 255},
                        }
                        for label, color in _RGB_CHANNELS
                    ],
                    "rdefs": {"model": "color"},
                },
            },
            IAIN_ATTR: iain,
        },
    }


def _array_metadata(source: dict[str, Any]) -> dict[str, Any]:
    """Rebuilt from validated numbers and fixed tokens; nothing of the source is copied as is."""
    fill = source.get("fill_value")
    codecs: list[dict[str, Any]] = []
    for codec in source["codecs"]:
        name = codec.get("name") if isinstance(codec, dict) else None
        if name not in _ALLOWED_CODECS:
            raise SourcePyramidError(f"unexpected codec {str(name)[:40]!r} in a level array")
        config = codec.get("configuration") or {}
        clean: dict[str, Any] = {}
        if isinstance(config, dict):
            order, quality = config.get("order"), config.get("quality")
            if isinstance(order, list) and sorted(map(str, order)) == ["0", "1", "2"]:
                clean["order"] = [int(n) for n in order]  # a permutation of 0, 1, 2 only
            if isinstance(quality, int) and not isinstance(quality, bool) and 1 <= quality <= 100:
                clean["quality"] = quality
            if config.get("subsampling") in _SUBSAMPLINGS:
                clean["subsampling"] = config["subsampling"]
            if config.get("endian") in ("little", "big"):
                clean["endian"] = config["endian"]
        codecs.append({"name": name, "configuration": clean} if clean else {"name": name})
    return {
        "zarr_format": 3,
        "node_type": "array",
        "shape": [int(n) for n in source["shape"]],
        "data_type": "uint8",
        "chunk_grid": {
            "name": "regular",
            "configuration": {
                "chunk_shape": [
                    int(n) for n in source["chunk_grid"]["configuration"]["chunk_shape"]
                ]
            },
        },
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": fill if isinstance(fill, int) and 0 <= fill <= 255 else 255,
        "codecs": codecs,
        "dimension_names": ["c", "y", "x"],
    }


def _copy_chunks(
    source: Path, target: Path, level: int, info: SharedPyramidInfo, counts: list[int]
) -> None:
    """Copy the chunks of the grid only, by their computed keys (stray files are never walked)."""
    columns, rows = info.grid(level)
    tile_w, tile_h = info.tile_width, info.tile_height
    bounds = info.region.at_level(level) if info.region else None
    for row in range(rows):
        made = False
        for col in range(columns):
            inside = True
            if bounds is not None:
                x0, y0, x1, y1 = bounds
                tx, ty = col * tile_w, row * tile_h
                if tx >= x1 or ty >= y1 or tx + tile_w <= x0 or ty + tile_h <= y0:
                    continue  # outside the shared region: absent, i.e. white
                inside = x0 <= tx and y0 <= ty and tx + tile_w <= x1 and ty + tile_h <= y1
            key = chunk_key(level, col, row)
            src = source / key
            if not src.is_file() or src.is_symlink():
                continue  # absent chunk = fill value (white glass)
            dst = target / key
            if not made:
                dst.parent.mkdir(parents=True, exist_ok=True)
                made = True
            data = src.read_bytes()
            if not inside and bounds is not None:
                dst.write_bytes(_crop_tile(data, bounds, col * tile_w, row * tile_h))
                counts[2] += 1
                continue
            clean = strip_jpeg_metadata(data)
            if clean == data:
                try:
                    os.link(src, dst)
                except OSError:
                    dst.write_bytes(data)
                counts[0] += 1
            else:
                dst.write_bytes(clean)
                counts[1] += 1


def _crop_tile(data: bytes, bounds: tuple[int, int, int, int], tile_x: int, tile_y: int) -> bytes:
    """Decode a tile the region crosses, whiten what lies outside it, re-encode (no metadata)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            pixels = np.array(image.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise SourcePyramidError(f"undecodable chunk crossed by the region: {exc}") from exc
    x0, y0, x1, y1 = (
        bounds[0] - tile_x,
        bounds[1] - tile_y,
        bounds[2] - tile_x,
        bounds[3] - tile_y,
    )
    keep = np.zeros(pixels.shape[:2], dtype=bool)
    keep[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = True
    pixels[~keep] = 255
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


# Never referenced: named here so a reader sees what is excluded by construction.
_EXCLUDED_GROUPS = (ASSOCIATED_GROUP, LABELS_GROUP)

"""Tiles for the HTTP edge: stored chunk bytes when a request maps onto one chunk, else
pixels decoded from the chunks, cropped or resized, encoded once and cached.

Coordinate planes: ``l0_`` level-0 pixels, ``lvl_`` pixels of a stored level, ``dz_`` DeepZoom
levels (0 = 1x1 px, the largest = stored level 0). Arrays are (y, x, 3) uint8 inside, JPEG
bytes at the edge. ETags are derived from the slide id (a hash of the pyramid's content
metadata) and the request, so a 304 costs no read.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image

from tiling.cache import MemoryCache, TileCache
from tiling.catalog import SlideRef
from tiling.codec import decode_jpeg, encode_jpeg
from tiling.errors import (
    ChunkDecodeError,
    InvalidTileRequestError,
    TileOutOfRangeError,
    UnsupportedTileRequestError,
)
from tiling.layout import FILL_VALUE, chunk_key

__all__ = ["MAX_DECODE_PIXELS", "Tile", "TileService", "dz_level_count"]

RGB = npt.NDArray[np.uint8]
MAX_DECODE_PIXELS = 1 << 26  # 67 Mpx of source pixels per request, ~200 MB decoded


@dataclass(frozen=True, slots=True)
class Tile:
    data: bytes
    etag: str  # quoted, strong
    media_type: str = "image/jpeg"


def etag_for(slide_id: str, descriptor: str) -> str:
    digest = hashlib.blake2b(f"{slide_id}|{descriptor}".encode(), digest_size=16)
    return f'"{digest.hexdigest()}"'


def dz_level_count(width: int, height: int) -> int:
    """DeepZoom levels: 0 is 1x1 px, each next one doubles, the last is full resolution."""
    return math.ceil(math.log2(max(width, height))) + 1 if max(width, height) > 1 else 1


class TileService:
    """Reads and renders tiles of catalogued slides; one per process, thread-safe."""

    def __init__(
        self, cache: TileCache, jpeg_quality: int = 85, chunk_cache_bytes: int = 128 << 20
    ) -> None:
        self.cache = cache
        self.jpeg_quality = jpeg_quality
        # stored chunks are immutable: keeping hot ones in memory saves the open/read/close
        self.chunks = MemoryCache(chunk_cache_bytes)
        self._fill: dict[tuple[int, int], bytes] = {}

    def _stored(self, ref: SlideRef, level: int, col: int, row: int) -> bytes | None:
        key = f"{ref.id}/{level}/{col}/{row}"
        data = self.chunks.get(key)
        if data is None:
            data = ref.store.get(chunk_key(level, col, row))
            if data is not None:
                self.chunks.put(key, data)
        return data

    # -- stored chunks -------------------------------------------------------------------
    @staticmethod
    def check_tile(ref: SlideRef, level: int, col: int, row: int) -> None:
        if not 0 <= level < len(ref.levels):
            raise TileOutOfRangeError(f"level {level} not in 0..{len(ref.levels) - 1}")
        info = ref.levels[level]
        if not (0 <= col < info.columns and 0 <= row < info.rows):
            raise TileOutOfRangeError(
                f"tile ({col}, {row}) not in level {level}'s {info.columns}x{info.rows} grid"
            )

    def stored_chunk(self, ref: SlideRef, level: int, col: int, row: int) -> bytes | None:
        """The chunk file's bytes (a complete JPEG), or None for a chunk never written."""
        self.check_tile(ref, level, col, row)
        return self._stored(ref, level, col, row)

    def chunk_tile(self, ref: SlideRef, level: int, col: int, row: int) -> Tile:
        """Stored chunk (col, row) of ``level`` as it is on disk -- what a static file server
        answers for ``/tiles/`` -- or the fill tile for a chunk never written (glass)."""
        data = self.stored_chunk(ref, level, col, row)
        if data is None:
            size = (ref.spec.tile_width, ref.spec.tile_height)
            data = self._fill.get(size)
            if data is None:
                fill = np.full((size[1], size[0], 3), FILL_VALUE, np.uint8)
                data = self._fill[size] = self.encode(fill)
        return Tile(data, etag_for(ref.id, f"chunk/{level}/{col}/{row}"))

    def is_whole_chunk(self, ref: SlideRef, level: int, col: int, row: int) -> bool:
        info = ref.levels[level]
        return (col + 1) * ref.spec.tile_width <= info.width and (
            row + 1
        ) * ref.spec.tile_height <= info.height

    def _decode_chunk(self, ref: SlideRef, level: int, col: int, row: int) -> RGB:
        data = self.stored_chunk(ref, level, col, row)
        shape = (ref.spec.tile_height, ref.spec.tile_width, 3)
        if data is None:
            return np.full(shape, FILL_VALUE, np.uint8)
        pixels = decode_jpeg(data)
        if pixels.shape != shape:
            raise ChunkDecodeError(f"chunk is {pixels.shape[1]}x{pixels.shape[0]}, not a tile")
        return pixels

    def encode(self, pixels: RGB) -> bytes:
        return encode_jpeg(pixels, self.jpeg_quality, subsampling="420")  # small, as browsers like

    def read_region(self, ref: SlideRef, level: int, box: tuple[int, int, int, int]) -> RGB:
        """Pixels of stored ``level`` in ``box`` = (lvl_x, lvl_y, width, height), clipped."""
        info = ref.levels[level]
        x, y, width, height = box
        x0, y0 = max(0, x), max(0, y)
        x1, y1 = min(info.width, x + width), min(info.height, y + height)
        if x1 <= x0 or y1 <= y0:
            raise InvalidTileRequestError("region outside the image")
        if (x1 - x0) * (y1 - y0) > MAX_DECODE_PIXELS:
            raise InvalidTileRequestError(f"region of {x1 - x0}x{y1 - y0} px is too large")
        tw, th = ref.spec.tile_width, ref.spec.tile_height
        out = np.empty((y1 - y0, x1 - x0, 3), np.uint8)
        for row in range(y0 // th, (y1 - 1) // th + 1):
            for col in range(x0 // tw, (x1 - 1) // tw + 1):
                tile = self._decode_chunk(ref, level, col, row)
                tx0, ty0 = max(x0, col * tw), max(y0, row * th)
                tx1, ty1 = min(x1, (col + 1) * tw), min(y1, (row + 1) * th)
                out[ty0 - y0 : ty1 - y0, tx0 - x0 : tx1 - x0] = tile[
                    ty0 - row * th : ty1 - row * th, tx0 - col * tw : tx1 - col * tw
                ]
        return out

    def _cached(self, key: str, render: Callable[[], bytes]) -> bytes:
        data = self.cache.get(key)
        if data is None:
            data = render()
            self.cache.put(key, data)
        return data

    # -- DeepZoom ----------------------------------------------------------------------------
    def dz_geometry(self, ref: SlideRef, dz_level: int) -> tuple[int, int, int]:
        """(stored level or -1, width, height) of DeepZoom level ``dz_level``."""
        count = dz_level_count(ref.spec.width, ref.spec.height)
        if not 0 <= dz_level < count:
            raise TileOutOfRangeError(f"level {dz_level} not in 0..{count - 1}")
        level = count - 1 - dz_level
        if level < len(ref.levels):
            info = ref.levels[level]
            return level, info.width, info.height
        scale = 2**level
        return -1, -(-ref.spec.width // scale), -(-ref.spec.height // scale)

    def dz_tile_cheap(self, ref: SlideRef, dz_level: int, col: int, row: int) -> Tile | None:
        """The tile when it costs no decoding (stored chunk or cache hit), else None."""
        level, _, _ = self.dz_geometry(ref, dz_level)
        descriptor = f"dz/{dz_level}/{col}/{row}"
        if level >= 0:
            self.check_tile(ref, level, col, row)
            if self.is_whole_chunk(ref, level, col, row):
                data = self._stored(ref, level, col, row)
                if data is not None:
                    return Tile(data, etag_for(ref.id, descriptor))
        key = etag_for(ref.id, descriptor)
        cached = self.cache.memory.get(key)
        return Tile(cached, key) if cached is not None else None

    def dz_tile(self, ref: SlideRef, dz_level: int, col: int, row: int) -> Tile:
        """DeepZoom tile (col, row) of ``dz_level``: tile size = chunk size, overlap 0."""
        tile = self.dz_tile_cheap(ref, dz_level, col, row)
        if tile is not None:
            return tile
        level, width, height = self.dz_geometry(ref, dz_level)
        tw, th = ref.spec.tile_width, ref.spec.tile_height
        if level < 0 and (col, row) != (0, 0):
            raise TileOutOfRangeError(f"tile ({col}, {row}) not in level {dz_level}'s 1x1 grid")
        key = etag_for(ref.id, f"dz/{dz_level}/{col}/{row}")

        def render() -> bytes:
            if level >= 0:  # an edge tile or an unwritten chunk: crop the padded chunk
                return self.encode(self.read_region(ref, level, (col * tw, row * th, tw, th)))
            last = len(ref.levels) - 1
            info = ref.levels[last]
            pixels = self.read_region(ref, last, (0, 0, info.width, info.height))
            image = Image.fromarray(pixels).resize((width, height), Image.Resampling.LANCZOS)
            return self.encode(np.asarray(image))

        return Tile(self._cached(key, render), key)

    def dzi(self, ref: SlideRef) -> str:
        if ref.spec.tile_width != ref.spec.tile_height:
            raise UnsupportedTileRequestError("DeepZoom needs square tiles")
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" Format="jpeg" '
            f'Overlap="0" TileSize="{ref.spec.tile_width}">'
            f'<Size Width="{ref.spec.width}" Height="{ref.spec.height}"/></Image>\n'
        )

    # -- arbitrary regions (IIIF, thumbnails) -------------------------------------------------
    def render(
        self, ref: SlideRef, l0_box: tuple[int, int, int, int], size: tuple[int, int]
    ) -> Tile:
        """Level-0 region ``l0_box`` = (x, y, width, height) scaled to ``size`` (width, height).

        Reads the coarsest stored level that still has at least the requested resolution; a
        request that is exactly one whole stored chunk is answered with its stored bytes.
        """
        x, y, width, height = l0_box
        out_w, out_h = size
        scale = min(width / out_w, height / out_h)
        level = 0
        while level + 1 < len(ref.levels) and 2 ** (level + 1) <= scale:
            level += 1
        factor = 2**level
        tw, th = ref.spec.tile_width, ref.spec.tile_height
        descriptor = f"region/{x},{y},{width},{height}/{out_w},{out_h}"
        key = etag_for(ref.id, descriptor)
        info = ref.levels[level]
        if (
            x % (tw * factor) == 0
            and y % (th * factor) == 0
            and (out_w, out_h) == (tw, th)
            and (width, height) == (tw * factor, th * factor)
        ):
            col, row = x // (tw * factor), y // (th * factor)
            if col < info.columns and row < info.rows and self.is_whole_chunk(ref, level, col, row):
                data = self._stored(ref, level, col, row)
                if data is not None:
                    return Tile(data, key)

        def render() -> bytes:
            lvl_x0, lvl_y0 = x // factor, y // factor
            lvl_x1 = min(info.width, -(-(x + width) // factor))
            lvl_y1 = min(info.height, -(-(y + height) // factor))
            pixels = self.read_region(
                ref, level, (lvl_x0, lvl_y0, lvl_x1 - lvl_x0, lvl_y1 - lvl_y0)
            )
            if pixels.shape[:2] != (out_h, out_w):
                image = Image.fromarray(pixels).resize((out_w, out_h), Image.Resampling.LANCZOS)
                pixels = np.asarray(image)
            return self.encode(pixels)

        return Tile(self._cached(key, render), key)

    def thumbnail(self, ref: SlideRef, max_px: int) -> Tile:
        """The whole slide fitted in ``max_px`` x ``max_px``, from the pyramid only."""
        width, height = ref.spec.width, ref.spec.height
        scale = max(width, height) / max_px
        size = (max(1, round(width / scale)), max(1, round(height / scale)))
        if scale < 1:
            size = (width, height)
        return self.render(ref, (0, 0, width, height), size)

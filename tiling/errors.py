"""Errors raised while building, reading and serving pyramids.

::

    TilingError                     base; ``code`` is a stable machine string
    ├── OutputExistsError           (also FileExistsError) OUT exists and overwrite was not asked
    ├── InvalidOutputError          (also ValueError) OUT is not a usable path / URL
    ├── SourceReadError             the slide failed while being read (wraps a wsi.SlideError)
    ├── PyramidNotFoundError        (also FileNotFoundError, LookupError) no pyramid at the path,
    │                               or an unknown / forbidden slide id or store key
    ├── CorruptPyramidError         a pyramid whose metadata or chunks cannot be understood
    │   └── InvalidPyramidError     a store that does not follow tiling/layout.py
    ├── InvalidLevelError           (also ValueError) level / region outside the pyramid
    ├── TileOutOfRangeError         (also ValueError) level / column / row outside the pyramid
    ├── InvalidTileRequestError     (also ValueError) a malformed tile, region or size request
    ├── UnsupportedTileRequestError a valid request for a feature we do not offer (IIIF rotation...)
    ├── ChunkDecodeError            a chunk is not a decodable JPEG of the expected size
    └── TileGrantError              a /tiles/ request without a live signed grant (403)

An unknown slide id and a slide the caller may not see raise the same
:class:`PyramidNotFoundError`, so ids cannot be probed.
"""

from __future__ import annotations

__all__ = [
    "ChunkDecodeError",
    "CorruptPyramidError",
    "InvalidLevelError",
    "InvalidOutputError",
    "InvalidPyramidError",
    "InvalidTileRequestError",
    "OutputExistsError",
    "PyramidNotFoundError",
    "SourceReadError",
    "TileGrantError",
    "TileOutOfRangeError",
    "TilingError",
    "UnsupportedTileRequestError",
]


class TilingError(Exception):
    """Base of every error about a pyramid or a tile request."""

    code = "tiling_error"


class OutputExistsError(TilingError, FileExistsError):
    code = "output_exists"


class InvalidOutputError(TilingError, ValueError):
    code = "invalid_output"


class SourceReadError(TilingError):
    code = "source_read_failed"


class PyramidNotFoundError(TilingError, FileNotFoundError, LookupError):
    code = "slide_not_found"


class CorruptPyramidError(TilingError):
    code = "corrupt_pyramid"


class InvalidPyramidError(CorruptPyramidError):
    code = "invalid_pyramid"


class InvalidLevelError(TilingError, ValueError):
    code = "invalid_level"


class TileOutOfRangeError(TilingError, ValueError):
    code = "tile_out_of_range"


class InvalidTileRequestError(TilingError, ValueError):
    code = "invalid_tile_request"


class UnsupportedTileRequestError(TilingError):
    code = "unsupported_tile_request"


class ChunkDecodeError(TilingError):
    code = "chunk_decode_failed"


class TileGrantError(TilingError):
    code = "tile_grant_invalid"

"""Errors raised while reading and serving pyramids.

::

    TilingError                     base; ``code`` is a stable machine string
    ├── PyramidNotFoundError        (also LookupError) unknown or forbidden slide id / store key
    ├── InvalidPyramidError         a store that does not follow tiling/layout.py
    ├── TileOutOfRangeError         (also ValueError) level / column / row outside the pyramid
    ├── InvalidTileRequestError     (also ValueError) a malformed tile, region or size request
    └── UnsupportedTileRequestError a valid request for a feature we do not offer (IIIF rotation...)

An unknown slide id and a slide the caller may not see raise the same
:class:`PyramidNotFoundError`, so ids cannot be probed.
"""

from __future__ import annotations

__all__ = [
    "InvalidPyramidError",
    "InvalidTileRequestError",
    "PyramidNotFoundError",
    "TileOutOfRangeError",
    "TilingError",
    "UnsupportedTileRequestError",
]


class TilingError(Exception):
    """Base of every error about a pyramid or a tile request."""

    code = "tiling_error"


class PyramidNotFoundError(TilingError, LookupError):
    code = "slide_not_found"


class InvalidPyramidError(TilingError):
    code = "invalid_pyramid"


class TileOutOfRangeError(TilingError, ValueError):
    code = "tile_out_of_range"


class InvalidTileRequestError(TilingError, ValueError):
    code = "invalid_tile_request"


class UnsupportedTileRequestError(TilingError):
    code = "unsupported_tile_request"

"""Errors raised while building or reading a pyramid.

::

    TilingError                     base; ``code`` is a stable machine string
    ├── OutputExistsError           (also FileExistsError) OUT exists and overwrite was not asked
    ├── InvalidOutputError          (also ValueError) OUT is not a usable path / URL
    ├── SourceReadError             the slide failed while being read (wraps a wsi.SlideError)
    ├── PyramidNotFoundError        (also FileNotFoundError) no pyramid at the given path / URL
    ├── CorruptPyramidError         a pyramid whose metadata or chunks cannot be understood
    ├── InvalidLevelError           (also ValueError) level / region outside the pyramid
    └── ChunkDecodeError            a chunk is not a decodable JPEG of the expected size
"""

from __future__ import annotations

__all__ = [
    "ChunkDecodeError",
    "CorruptPyramidError",
    "InvalidLevelError",
    "InvalidOutputError",
    "OutputExistsError",
    "PyramidNotFoundError",
    "SourceReadError",
    "TilingError",
]


class TilingError(Exception):
    """Base of every pyramid-building or pyramid-reading error."""

    code = "tiling_error"


class OutputExistsError(TilingError, FileExistsError):
    code = "output_exists"


class InvalidOutputError(TilingError, ValueError):
    code = "invalid_output"


class SourceReadError(TilingError):
    code = "source_read_failed"


class PyramidNotFoundError(TilingError, FileNotFoundError):
    code = "pyramid_not_found"


class CorruptPyramidError(TilingError):
    code = "corrupt_pyramid"


class InvalidLevelError(TilingError, ValueError):
    code = "invalid_level"


class ChunkDecodeError(TilingError):
    code = "chunk_decode_failed"

"""Errors raised by slide readers.

::

    SlideError                      base; ``code`` is a stable machine string
    ├── SlideNotFoundError          (also FileNotFoundError) no such file
    ├── UnsupportedFormatError      no backend recognises the bytes
    ├── CorruptSlideError           recognised, but its structure is broken
    │   ├── SlideTooLargeError      declared dimensions beyond what we accept
    │   └── ParseTimeoutError       opening took longer than the time limit
    ├── UnreadableRegionError       opened, but pixel data cannot be decoded
    └── InvalidRegionError          (also ValueError) caller asked for pixels out of range
"""

from __future__ import annotations

__all__ = [
    "CorruptSlideError",
    "InvalidRegionError",
    "ParseTimeoutError",
    "SlideError",
    "SlideNotFoundError",
    "SlideTooLargeError",
    "UnreadableRegionError",
    "UnsupportedFormatError",
]


class SlideError(Exception):
    """Base of every error about a slide file."""

    code = "slide_error"


class SlideNotFoundError(SlideError, FileNotFoundError):
    code = "slide_not_found"


class UnsupportedFormatError(SlideError):
    code = "unsupported_format"


class CorruptSlideError(SlideError):
    code = "corrupt_slide"


class SlideTooLargeError(CorruptSlideError):
    code = "slide_too_large"


class ParseTimeoutError(CorruptSlideError):
    code = "parse_timeout"


class UnreadableRegionError(SlideError):
    code = "unreadable_region"


class InvalidRegionError(SlideError, ValueError):
    code = "invalid_region"

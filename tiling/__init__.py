"""tiling: build and read IAIN pyramids (OME-Zarr v3 with one standalone JPEG per chunk).

Importing the package registers the ``iain.jpeg`` zarr codec, so
``zarr.open_group("SLIDE.zarr")["0"][:, y0:y1, x0:x1]`` works in any process that imported it
(third-party processes get it through the ``zarr.codecs`` entry point).
"""

from __future__ import annotations

from zarr.registry import register_codec

from tiling.codec import JpegCodec
from tiling.layout import JPEG_CODEC_NAME

register_codec(JPEG_CODEC_NAME, JpegCodec)

__all__ = ["JpegCodec"]

"""A decode-only ``iain.jpeg`` codec for zarr-python, used until ``tiling.codec`` lands."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import imagecodecs
import zarr
from zarr.abc.codec import ArrayBytesCodec
from zarr.core.array_spec import ArraySpec
from zarr.core.buffer import Buffer, NDBuffer

from tiling.layout import JPEG_CODEC_NAME


@dataclass(frozen=True)
class DecodeOnlyJpegCodec(ArrayBytesCodec):
    quality: int = 90

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DecodeOnlyJpegCodec:
        return cls(**(data.get("configuration") or {}))

    def to_dict(self) -> dict[str, Any]:
        return {"name": JPEG_CODEC_NAME, "configuration": {"quality": self.quality}}

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        pixels = imagecodecs.jpeg8_decode(chunk_bytes.to_bytes())
        return chunk_spec.prototype.nd_buffer.from_ndarray_like(pixels.reshape(chunk_spec.shape))

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer:
        raise NotImplementedError("decode only")

    def compute_encoded_size(self, input_byte_length: int, chunk_spec: ArraySpec) -> int:
        raise NotImplementedError


def ensure_jpeg_codec() -> None:
    """Register the real codec when the tiling package has one, else this stand-in."""
    try:
        import tiling.codec  # noqa: F401  (registers through the zarr.codecs entry point)

        zarr.registry.get_codec_class(JPEG_CODEC_NAME)
    except (ImportError, KeyError):
        zarr.registry.register_codec(JPEG_CODEC_NAME, DecodeOnlyJpegCodec)

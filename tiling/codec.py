"""``iain.jpeg``: a zarr v3 array-to-bytes codec storing each chunk as ONE standalone JPEG.

The array is (c, y, x); the codec chain is ``[transpose(order=[1, 2, 0]), iain.jpeg]`` so this
codec sees (tile_height, tile_width, 3) uint8 chunks, i.e. interleaved RGB as JPEG wants. The
chunk file is therefore a complete baseline JPEG a tile server can send to a browser as is,
and any baseline JPEG (e.g. a tile copied verbatim from a scanner file) decodes back.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import imagecodecs
import numpy as np
import numpy.typing as npt
from PIL import Image
from zarr.abc.codec import ArrayBytesCodec
from zarr.core.buffer import Buffer, NDBuffer
from zarr.core.common import JSON, parse_named_configuration

from tiling.errors import ChunkDecodeError
from tiling.layout import JPEG_CODEC_NAME

if TYPE_CHECKING:
    from typing import Self

    from zarr.core.array_spec import ArraySpec

__all__ = [
    "DEFAULT_QUALITY",
    "DEFAULT_SUBSAMPLING",
    "MAX_STEP",
    "SUBSAMPLINGS",
    "JpegCodec",
    "decode_jpeg",
    "encode_jpeg",
    "encode_jpeg_flat",
]

# 4:4:4 at Q90 for a re-encoded level 0 (and reduced levels with --min-psnr 0): H&E carries
# chroma detail that 4:2:0 loses (~32-34 dB on CMU-1 whatever the quality). Reduced levels
# default to encode_jpeg_flat at a measured step. Any of them is baseline. The codec's zarr
# configuration holds these values: what zarr-python would encode with; decoding ignores them.
DEFAULT_QUALITY = 90
DEFAULT_SUBSAMPLING = "444"
SUBSAMPLINGS = ("420", "422", "444")
# coarsest flat step: a flat area's mean moves in steps of step / 8 grey levels (the DC), so 24
# keeps smooth backgrounds to 3-level bands however little they cost; H&E needs 9-16 at 35.5 dB
MAX_STEP = 24


def encode_jpeg(
    tile: npt.NDArray[np.uint8],
    quality: int = DEFAULT_QUALITY,
    subsampling: str = DEFAULT_SUBSAMPLING,
    optimize: bool = True,
) -> bytes:
    """Encode an (h, w, 3) uint8 RGB tile as one baseline YCbCr JPEG any browser shows.

    ``optimize`` computes Huffman tables per tile (still baseline): ~7 % smaller for ~0.4 ms
    more per 256 px tile, which keeps a pyramid within the source size + 1/3.
    """
    data = imagecodecs.jpeg8_encode(
        np.ascontiguousarray(tile),
        level=quality,
        colorspace="rgb",
        subsampling=subsampling,
        optimize=optimize,
    )
    return bytes(data)


def encode_jpeg_flat(tile: npt.NDArray[np.uint8], step: float) -> bytes:
    """Encode an (h, w, 3) uint8 RGB tile as a baseline 4:4:4 JPEG with FLAT quantisation tables.

    Every DCT coefficient of Y, Cb and Cr is quantised with the same ``step``. The DCT is
    orthonormal and RGB error weighs the three YCbCr planes about equally, so equal steps
    minimise squared error (what PSNR measures) per byte; the standard tables spend bits on
    low frequencies and luma instead. Measured on H&E level-1 tiles: at the PSNR of Q90 4:4:4,
    15-21 % fewer bytes. A half step (12.5) alternates 12 and 13 over the coefficients. Pillow
    is the libjpeg-turbo binding here that takes custom tables.
    """
    if not 1 <= step <= 255 or (2 * step) % 1:
        raise ValueError(f"quantiser step {step} not a multiple of 0.5 in 1..255")
    low = int(step)
    table = [low + (i % 2 if step != low else 0) for i in range(64)]
    image = Image.fromarray(np.ascontiguousarray(tile))
    buffer = io.BytesIO()
    try:
        image.save(buffer, "JPEG", qtables=[table, table], subsampling=0, optimize=True)
    except OSError:  # Pillow's one-shot buffer for optimize is 2 bytes/px: fine steps overflow it
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", qtables=[table, table], subsampling=0, optimize=False)
    return buffer.getvalue()


def decode_jpeg(data: bytes | bytearray) -> npt.NDArray[np.uint8]:
    """Decode any baseline JPEG to (h, w, 3) uint8 RGB (greyscale is expanded to 3 channels)."""
    try:
        image = imagecodecs.jpeg8_decode(data, outcolorspace="rgb")
    except Exception as exc:  # imagecodecs raises its own Jpeg8Error / RuntimeError kinds
        raise ChunkDecodeError(f"not a decodable JPEG ({exc})") from exc
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    return array


@dataclass(frozen=True)
class JpegCodec(ArrayBytesCodec):
    """JPEG chunks: (tile_height, tile_width, 3) uint8 <-> one JPEG file."""

    is_fixed_size = False

    quality: int
    subsampling: str

    def __init__(
        self, *, quality: int = DEFAULT_QUALITY, subsampling: str = DEFAULT_SUBSAMPLING
    ) -> None:
        if not 1 <= int(quality) <= 100:
            raise ValueError(f"JPEG quality {quality} not in 1..100")
        if subsampling not in SUBSAMPLINGS:
            raise ValueError(f"JPEG subsampling {subsampling!r} not in {SUBSAMPLINGS}")
        object.__setattr__(self, "quality", int(quality))
        object.__setattr__(self, "subsampling", subsampling)

    @classmethod
    def from_dict(cls, data: dict[str, JSON]) -> Self:
        _, configuration = parse_named_configuration(
            data, JPEG_CODEC_NAME, require_configuration=False
        )
        quality = (configuration or {}).get("quality", DEFAULT_QUALITY)
        subsampling = (configuration or {}).get("subsampling", DEFAULT_SUBSAMPLING)
        if not isinstance(quality, int) or not isinstance(subsampling, str):
            raise ValueError(f"bad iain.jpeg configuration {configuration!r}")
        return cls(quality=quality, subsampling=subsampling)

    def to_dict(self) -> dict[str, JSON]:
        config: dict[str, JSON] = {"quality": self.quality, "subsampling": self.subsampling}
        return {"name": JPEG_CODEC_NAME, "configuration": config}

    def validate(self, *, shape: tuple[int, ...], dtype: object, chunk_grid: object) -> None:
        # the transpose filter turns (3, h, w) into (h, w, 3) before this codec
        if len(shape) != 3:
            raise ValueError(f"iain.jpeg needs 3-d (c, y, x) arrays, got {len(shape)}-d")

    def _decode_sync(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        array = decode_jpeg(chunk_bytes.as_numpy_array().tobytes())
        height, width, channels = chunk_spec.shape
        if array.shape[0] < height or array.shape[1] < width or channels != 3:
            raise ChunkDecodeError(
                f"JPEG chunk is {array.shape[1]}x{array.shape[0]}, expected {width}x{height}"
            )
        array = array[:height, :width]
        contiguous: Any = np.ascontiguousarray(array)  # numpy arrays are NDArrayLike
        return chunk_spec.prototype.nd_buffer.from_ndarray_like(contiguous)

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        return self._decode_sync(chunk_bytes, chunk_spec)

    def _encode_sync(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        array = np.asarray(chunk_array.as_numpy_array(), dtype=np.uint8)
        if array.ndim != 3 or array.shape[2] != 3:
            raise ValueError(f"iain.jpeg encodes (h, w, 3) chunks, got shape {array.shape}")
        data = encode_jpeg(array, self.quality, self.subsampling)
        return chunk_spec.prototype.buffer.from_bytes(data)

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        return self._encode_sync(chunk_array, chunk_spec)

    def compute_encoded_size(self, input_byte_length: int, _chunk_spec: ArraySpec) -> int:
        raise NotImplementedError("JPEG size is data-dependent")

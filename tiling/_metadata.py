"""The metadata documents of a pyramid: NGFF 0.5 multiscales + omero, IAIN's slide attributes.

Built in a zarr ``MemoryStore`` with zarr's own API (so the JSON is exactly what zarr-python
writes), then copied key by key to the output; the root ``zarr.json`` is written last by the caller.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import numpy as np
import zarr
from zarr.codecs import TransposeCodec
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import MemoryStore

from tiling.codec import JpegCodec
from tiling.layout import ASSOCIATED_GROUP, FILL_VALUE, IAIN_ATTR, PyramidSpec

__all__ = ["ROOT_KEY", "multiscales_attrs", "pyramid_documents", "root_document"]

ROOT_KEY = "zarr.json"
_CHANNELS = (("red", "FF0000"), ("green", "00FF00"), ("blue", "0000FF"))


def multiscales_attrs(spec: PyramidSpec, name: str) -> dict[str, Any]:
    """The ``ome`` attribute: NGFF 0.5 multiscales (scales in micrometres when mpp is known)."""
    known = spec.mpp_x is not None and spec.mpp_y is not None
    unit = {"unit": "micrometer"} if known else {}
    datasets = []
    for level in range(spec.level_count):
        factor = spec.downsample(level)
        scale_y = (spec.mpp_y or 1.0) * factor
        scale_x = (spec.mpp_x or 1.0) * factor
        datasets.append(
            {
                "path": str(level),
                "coordinateTransformations": [{"type": "scale", "scale": [1.0, scale_y, scale_x]}],
            }
        )
    return {
        "version": "0.5",
        "multiscales": [
            {
                "name": name,
                "axes": [
                    {"name": "c", "type": "channel"},
                    {"name": "y", "type": "space", **unit},
                    {"name": "x", "type": "space", **unit},
                ],
                "datasets": datasets,
                "type": "mean",
            }
        ],
        "omero": {
            "version": "0.5",
            "name": name,
            "channels": [
                {
                    "label": label,
                    "color": color,
                    "active": True,
                    "coefficient": 1.0,
                    "family": "linear",
                    "inverted": False,
                    "window": {"start": 0, "end": 255, "min": 0, "max": 255},
                }
                for label, color in _CHANNELS
            ],
            "rdefs": {"model": "color", "defaultZ": 0, "defaultT": 0},
        },
    }


def iain_attrs(info: Mapping[str, Any], icc_profile: bytes | None) -> dict[str, Any]:
    attrs = dict(info)
    attrs["icc_profile_base64"] = (
        base64.b64encode(icc_profile).decode("ascii") if icc_profile else None
    )
    return attrs


def pyramid_documents(
    spec: PyramidSpec,
    *,
    name: str,
    quality: int,
    subsampling: str,
    info: Mapping[str, Any],
    icc_profile: bytes | None,
    associated: Mapping[str, np.ndarray],
) -> dict[str, bytes]:
    """Every metadata key (and the associated images' chunks), root ``zarr.json`` included."""
    store = MemoryStore()
    root = _root_group(store, spec, name, info, icc_profile)
    for level in range(spec.level_count):
        width, height = spec.level_size(level)
        root.create_array(
            str(level),
            shape=(3, height, width),
            chunks=(3, spec.tile_height, spec.tile_width),
            dtype="uint8",
            fill_value=FILL_VALUE,
            filters=[TransposeCodec(order=(1, 2, 0))],
            serializer=JpegCodec(quality=quality, subsampling=subsampling),
            compressors=None,
            dimension_names=("c", "y", "x"),
            write_data=False,
        )
    if associated:
        group = root.create_group(ASSOCIATED_GROUP, attributes={"identifying": True})
        for image_name, pixels in associated.items():
            # lossless (zstd): labels carry barcodes that JPEG could make unreadable
            array = group.create_array(
                image_name,
                shape=pixels.shape,
                chunks=pixels.shape,
                dtype="uint8",
                dimension_names=("y", "x", "c"),
            )
            array[...] = pixels

    return _dump(store)


def root_document(
    spec: PyramidSpec, *, name: str, info: Mapping[str, Any], icc_profile: bytes | None
) -> bytes:
    """The root ``zarr.json`` alone, as ``pyramid_documents`` writes it (the attributes live
    there; the arrays have their own keys): rewritten once the build has measured its levels."""
    store = MemoryStore()
    _root_group(store, spec, name, info, icc_profile)
    return _dump(store)[ROOT_KEY]


def _root_group(
    store: MemoryStore, spec: PyramidSpec, name: str, info: Mapping[str, Any],
    icc_profile: bytes | None,
) -> zarr.Group:  # fmt: skip
    attributes = {"ome": multiscales_attrs(spec, name), IAIN_ATTR: iain_attrs(info, icc_profile)}
    return zarr.create_group(store, zarr_format=3, attributes=attributes)


def _dump(store: MemoryStore) -> dict[str, bytes]:
    async def dump() -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        async for key in store.list():
            buffer = await store.get(key, prototype=default_buffer_prototype())
            if buffer is not None:
                out[key] = buffer.to_bytes()
        return out

    return sync(dump())

"""Label layers written the way inference writes them (``inference._output.LabelWriter``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from inference._output import LabelWriter
from inference.outlines import mask_to_features, write_geojson
from tests.inference.helpers import spec
from tiling.layout import PyramidSpec

# label value -> RGBA the overlay must show (the toy card's colours, background transparent)
RGBA = np.array([[0, 0, 0, 0], [0, 160, 0, 255], [220, 0, 0, 255]], np.uint8)


def regions_mask(width: int, height: int) -> npt.NDArray[np.uint8]:
    """Epithelium band with a tumour square inside; background elsewhere."""
    mask = np.zeros((height, width), np.uint8)
    mask[100 : height - 100, 80 : width - 80] = 1
    mask[200:420, 300:620] = 2
    return mask


def write_labels(
    store: Path, geometry: PyramidSpec, mask: npt.NDArray[np.uint8], complete: bool = True
) -> None:
    """``labels/toy`` (level-0 mask, pyramid, probabilities) and ``labels/toy.geojson``."""
    model = spec()
    sizes = [geometry.level_size(k) for k in range(geometry.level_count)]
    tile = (geometry.tile_width, geometry.tile_height)
    writer = LabelWriter(store, model, sizes, tile, 0, geometry.mpp_x or 1.0, {"run": 1})
    writer.prepare()
    probs = np.stack([(mask == c).astype(np.uint8) * 255 for c in range(3)])
    writer.write_unit(0, 0, 0, mask, probs)
    if complete:
        writer.finish()
        features = mask_to_features(mask, model, 1.0, geometry.mpp_x)
        write_geojson(store / "labels" / "toy.geojson", features, model)

"""IIIF Image API 3.0, compliance level 1 plus a few level-2 forms (pct: regions and sizes,
``!w,h``): parsing request parameters into a level-0 box and an output size, and info.json.

https://iiif.io/api/image/3.0/ -- parameters are parsed strictly; anything malformed or
unsupported raises :class:`InvalidTileRequestError` / :class:`UnsupportedTileRequestError`
(HTTP 400), never a server error.
"""

from __future__ import annotations

import math
import re
from typing import Any

from tiling.catalog import SlideRef
from tiling.errors import InvalidTileRequestError, UnsupportedTileRequestError

__all__ = ["MAX_AREA", "MAX_SIDE", "check_rest", "info_json", "parse_region", "parse_size"]

MAX_SIDE = 4096  # largest output width / height we render
MAX_AREA = MAX_SIDE * MAX_SIDE
CONTEXT = "http://iiif.io/api/image/3/context.json"

_INT = r"(?:0|[1-9][0-9]{0,8})"
_NUM = r"(?:(?:0|[1-9][0-9]{0,8})(?:\.[0-9]{1,6})?|\.[0-9]{1,6})"
_XYWH = re.compile(rf"({_INT}),({_INT}),({_INT}),({_INT})")
_PCT_XYWH = re.compile(rf"pct:({_NUM}),({_NUM}),({_NUM}),({_NUM})")
_SIZE = re.compile(rf"(\^)?(?:(max)|pct:({_NUM})|(!)?({_INT})?,({_INT})?)")


def parse_region(text: str, width: int, height: int) -> tuple[int, int, int, int]:
    """The level-0 box (x, y, w, h) named by a IIIF region, clipped to the image."""
    if text == "full":
        return 0, 0, width, height
    if text == "square":
        side = min(width, height)
        return (width - side) // 2, (height - side) // 2, side, side
    if match := _XYWH.fullmatch(text):
        x, y, w, h = (int(v) for v in match.groups())
    elif match := _PCT_XYWH.fullmatch(text):
        px, py, pw, ph = (float(v) for v in match.groups())
        x, y = math.floor(px * width / 100), math.floor(py * height / 100)
        w, h = round(pw * width / 100), round(ph * height / 100)
    else:
        raise InvalidTileRequestError(f"invalid region {text[:40]!r}")
    if w <= 0 or h <= 0:
        raise InvalidTileRequestError("region has zero width or height")
    if x >= width or y >= height:
        raise InvalidTileRequestError("region outside the image")
    return x, y, min(w, width - x), min(h, height - y)


def parse_size(text: str, region_w: int, region_h: int) -> tuple[int, int]:
    """Output (width, height) for a IIIF size; upscaling only with ``^``."""
    match = _SIZE.fullmatch(text)
    if match is None:
        raise InvalidTileRequestError(f"invalid size {text[:40]!r}")
    upscale, is_max, pct, confined, w_text, h_text = match.groups()
    if is_max:
        scale = min(1.0, math.sqrt(MAX_AREA / (region_w * region_h)))
        scale = min(scale, MAX_SIDE / region_w, MAX_SIDE / region_h)
        if upscale:
            scale = min(
                MAX_SIDE / region_w,
                MAX_SIDE / region_h,
                math.sqrt(MAX_AREA / (region_w * region_h)),
            )
        out = (round(region_w * scale), round(region_h * scale))
    elif pct is not None:
        out = (round(region_w * float(pct) / 100), round(region_h * float(pct) / 100))
    elif w_text is None and h_text is None:
        raise InvalidTileRequestError("size needs a width or a height")
    elif confined:
        if w_text is None or h_text is None:
            raise InvalidTileRequestError("!w,h needs both width and height")
        scale = min(int(w_text) / region_w, int(h_text) / region_h)
        out = (round(region_w * scale), round(region_h * scale))
    elif h_text is None:
        assert w_text is not None
        out = (int(w_text), round(region_h * int(w_text) / region_w))
    elif w_text is None:
        out = (round(region_w * int(h_text) / region_h), int(h_text))
    else:
        out = (int(w_text), int(h_text))
    out_w, out_h = max(1, out[0]), max(1, out[1])
    if (out[0] <= 0 or out[1] <= 0) and not is_max:
        raise InvalidTileRequestError("size is zero")
    if not upscale and (out_w > region_w or out_h > region_h):
        raise InvalidTileRequestError("size larger than the region needs ^ (upscaling)")
    if out_w > MAX_SIDE or out_h > MAX_SIDE or out_w * out_h > MAX_AREA:
        raise InvalidTileRequestError(f"size {out_w}x{out_h} beyond {MAX_SIDE} px or max area")
    return out_w, out_h


def check_rest(rotation: str, quality: str, fmt: str) -> None:
    """Level 1 offers rotation 0, default/color quality and jpg only."""
    if not re.fullmatch(r"!?[0-9]{1,3}(?:\.[0-9]{1,6})?", rotation):
        raise InvalidTileRequestError(f"invalid rotation {rotation[:20]!r}")
    if rotation not in ("0", "0.0"):
        raise UnsupportedTileRequestError("only rotation 0 is supported")
    if quality not in ("default", "color", "gray", "bitonal"):
        raise InvalidTileRequestError(f"invalid quality {quality[:20]!r}")
    if quality not in ("default", "color"):
        raise UnsupportedTileRequestError(f"quality {quality} is not supported")
    if fmt != "jpg":
        raise UnsupportedTileRequestError(f"format {fmt[:10]!r} is not supported (jpg only)")


def info_json(ref: SlideRef, base_url: str) -> dict[str, Any]:
    """The image information document; tiles are the stored chunks, one scale factor per level."""
    sizes = [
        {"width": lv.width, "height": lv.height}
        for lv in reversed(ref.levels)
        if lv.width <= MAX_SIDE and lv.height <= MAX_SIDE
    ]
    return {
        "@context": CONTEXT,
        "id": f"{base_url}/iiif/3/{ref.id}",
        "type": "ImageService3",
        "protocol": "http://iiif.io/api/image",
        "profile": "level1",
        "width": ref.spec.width,
        "height": ref.spec.height,
        "maxWidth": MAX_SIDE,
        "maxHeight": MAX_SIDE,
        "maxArea": MAX_AREA,
        "sizes": sizes,
        "tiles": [
            {
                "width": ref.spec.tile_width,
                "height": ref.spec.tile_height,
                "scaleFactors": [2**k for k in range(len(ref.levels))],
            }
        ],
        "extraFeatures": ["regionByPct", "sizeByPct", "sizeByConfinedWh", "sizeByWh"],
    }

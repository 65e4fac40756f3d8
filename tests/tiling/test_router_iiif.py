"""IIIF parameter parsing (tiling.iiif) and DeepZoom geometry, without HTTP."""

from __future__ import annotations

import pytest

from tiling.errors import InvalidTileRequestError, UnsupportedTileRequestError
from tiling.iiif import MAX_SIDE, check_rest, parse_region, parse_size
from tiling.tiles import dz_level_count


@pytest.mark.parametrize(
    ("region", "box"),
    [
        ("full", (0, 0, 1000, 700)),
        ("square", (150, 0, 700, 700)),
        ("0,0,256,256", (0, 0, 256, 256)),
        ("900,600,500,500", (900, 600, 100, 100)),  # clipped at the image edge
        ("pct:50,50,50,50", (500, 350, 500, 350)),
    ],
)
def test_regions(region: str, box: tuple[int, int, int, int]) -> None:
    assert parse_region(region, 1000, 700) == box


@pytest.mark.parametrize(
    "region", ["", "0,0,0,5", "1000,0,5,5", "0,0,-5,5", "a,b,c,d", "1,2,3", "0,0,1e3,5", "01,0,5,5"]
)
def test_bad_regions(region: str) -> None:
    with pytest.raises(InvalidTileRequestError):
        parse_region(region, 1000, 700)


@pytest.mark.parametrize(
    ("size", "out"),
    [
        ("max", (1000, 700)),
        ("500,", (500, 350)),
        (",350", (500, 350)),
        ("100,100", (100, 100)),
        ("!100,100", (100, 70)),
        ("pct:10", (100, 70)),
        ("^2000,", (2000, 1400)),
    ],
)
def test_sizes(size: str, out: tuple[int, int]) -> None:
    assert parse_size(size, 1000, 700) == out


def test_max_is_capped_for_huge_regions() -> None:
    width, height = parse_size("max", 100_000, 50_000)
    assert width == MAX_SIDE and height == MAX_SIDE // 2


@pytest.mark.parametrize("size", ["1001,", "^99999,", "0,", ",", "!100,", "max,", "pct:", "-5,"])
def test_bad_sizes(size: str) -> None:
    with pytest.raises(InvalidTileRequestError):
        parse_size(size, 1000, 700)


def test_rotation_quality_format() -> None:
    check_rest("0", "default", "jpg")
    check_rest("0", "color", "jpg")
    for args in [("90", "default", "jpg"), ("0", "gray", "jpg"), ("0", "default", "png")]:
        with pytest.raises(UnsupportedTileRequestError):
            check_rest(*args)
    with pytest.raises(InvalidTileRequestError):
        check_rest("x", "default", "jpg")


@pytest.mark.parametrize(
    ("width", "height", "levels"), [(1, 1, 1), (2, 1, 2), (1000, 700, 11), (20000, 20000, 16)]
)
def test_deepzoom_level_count(width: int, height: int, levels: int) -> None:
    assert dz_level_count(width, height) == levels

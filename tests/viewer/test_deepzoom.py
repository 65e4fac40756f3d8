"""DeepZoom: descriptor, stored-bytes tiles, computed edge / coarse tiles, caching headers."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import imagecodecs
import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.viewer.conftest import HEIGHT, TILE, WIDTH
from tiling.layout import chunk_key

MAX_DZ = 10  # ceil(log2(1000))


def test_dzi_descriptor(client: TestClient, slide_ids: dict[str, str]) -> None:
    response = client.get(f"/slides/{slide_ids['alpha']}.dzi")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/xml")
    text = response.text
    assert f'TileSize="{TILE}"' in text and 'Overlap="0"' in text and 'Format="jpeg"' in text
    assert f'<Size Width="{WIDTH}" Height="{HEIGHT}"/>' in text


def test_whole_chunk_tiles_are_the_stored_bytes(
    client: TestClient, slide_ids: dict[str, str], data_dir: Path
) -> None:
    slide = slide_ids["alpha"]
    for dz_level, level, col, row in [(MAX_DZ, 0, 0, 0), (MAX_DZ, 0, 2, 1), (MAX_DZ - 1, 1, 0, 0)]:
        response = client.get(f"/slides/{slide}_files/{dz_level}/{col}_{row}.jpeg")
        assert response.status_code == 200
        stored = (data_dir / "alpha.zarr" / chunk_key(level, col, row)).read_bytes()
        assert response.content == stored
        assert response.headers["content-type"] == "image/jpeg"
        assert response.headers["cache-control"] == "public, max-age=31536000, immutable"


def test_edge_tiles_are_cropped_to_the_image(
    client: TestClient, slide_ids: dict[str, str], pixels: np.ndarray
) -> None:
    slide = slide_ids["alpha"]
    # level 0 is 1000x700: column 3 is 232 px wide, row 2 is 188 px high
    tile = imagecodecs.jpeg8_decode(client.get(f"/slides/{slide}_files/{MAX_DZ}/3_2.jpeg").content)
    assert tile.shape == (HEIGHT - 2 * TILE, WIDTH - 3 * TILE, 3)
    expected = pixels[2 * TILE :, 3 * TILE :].astype(int)
    assert np.abs(tile.astype(int) - expected).mean() < 6  # two JPEG generations


@pytest.mark.parametrize(("dz_level", "size"), [(0, (1, 1)), (3, (8, 6)), (7, (125, 88))])
def test_levels_below_the_smallest_stored_level_are_computed(
    client: TestClient, slide_ids: dict[str, str], dz_level: int, size: tuple[int, int]
) -> None:
    response = client.get(f"/slides/{slide_ids['alpha']}_files/{dz_level}/0_0.jpeg")
    assert response.status_code == 200
    tile = imagecodecs.jpeg8_decode(response.content)
    assert tile.shape[:2] == (size[1], size[0])


def test_missing_chunks_are_white(client: TestClient, slide_ids: dict[str, str]) -> None:
    # sparse: 600x300, chunks with only white glass were never written
    tile = imagecodecs.jpeg8_decode(
        client.get(f"/slides/{slide_ids['sparse']}_files/10/1_0.jpeg").content
    )
    assert tile.shape == (256, 256, 3) and tile.min() > 245


def test_etag_and_304(client: TestClient, slide_ids: dict[str, str]) -> None:
    url = f"/slides/{slide_ids['alpha']}_files/{MAX_DZ}/3_2.jpeg"
    first = client.get(url)
    etag = first.headers["etag"]
    assert re.fullmatch(r'"[0-9a-f]{32}"', etag)
    assert client.get(url).headers["etag"] == etag
    again = client.get(url, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert client.get(url, headers={"If-None-Match": '"other"'}).status_code == 200
    other = client.get(f"/slides/{slide_ids['alpha']}_files/{MAX_DZ}/0_0.jpeg")
    assert other.headers["etag"] != etag


@pytest.mark.parametrize(
    ("tail", "status"),
    [
        (f"{MAX_DZ + 1}/0_0.jpeg", 404),  # level beyond the pyramid
        (f"{MAX_DZ}/4_0.jpeg", 404),  # column beyond the grid
        (f"{MAX_DZ}/0_3.jpeg", 404),  # row beyond the grid
        ("0/1_0.jpeg", 404),  # the 1x1 level has one tile
        (f"{MAX_DZ}/99999999999999999999_0.jpeg", 422),
        (f"{MAX_DZ}/-1_0.jpeg", 422),
        (f"{MAX_DZ}/a_0.jpeg", 422),
        ("x/0_0.jpeg", 422),
        (f"{MAX_DZ}/0_0.png", 404),
        (f"{MAX_DZ}/..%2F..%2F0_0.jpeg", 404),
        (f"{MAX_DZ}/0_0%00.jpeg", 400),
    ],
)
def test_bad_tile_requests_are_4xx_json(
    client: TestClient, slide_ids: dict[str, str], tail: str, status: int
) -> None:
    response = client.get(f"/slides/{slide_ids['alpha']}_files/{tail}")
    assert response.status_code == status
    assert response.json()["error"] in {
        "tile_out_of_range",
        "invalid_request",
        "invalid_tile_request",
        "not_found",
    }


def test_unknown_slide(client: TestClient) -> None:
    for url in ["/slides/0123456789abcdef01234567.dzi", "/slides/zz_files/0/0_0.jpeg"]:
        response = client.get(url)
        assert response.status_code == 404 and response.json()["error"] == "slide_not_found"


def test_openseadragon_style_fetches_over_real_http(
    live_server: str, slide_ids: dict[str, str]
) -> None:
    """Fetch the descriptor, then every tile of every level the way OpenSeadragon builds URLs."""
    slide = slide_ids["alpha"]
    with httpx.Client(base_url=live_server) as http:
        dzi = http.get(f"/slides/{slide}.dzi").text
        tile_size = int(re.search(r'TileSize="(\d+)"', dzi)[1])  # type: ignore[index]
        width = int(re.search(r'Width="(\d+)"', dzi)[1])  # type: ignore[index]
        height = int(re.search(r'Height="(\d+)"', dzi)[1])  # type: ignore[index]
        max_level = int(np.ceil(np.log2(max(width, height))))
        fetched = 0
        for level in range(max_level + 1):
            scale = 2 ** (max_level - level)
            lw, lh = -(-width // scale), -(-height // scale)
            for row in range(-(-lh // tile_size)):
                for col in range(-(-lw // tile_size)):
                    response = http.get(f"/slides/{slide}_files/{level}/{col}_{row}.jpeg")
                    assert response.status_code == 200, (level, col, row)
                    tile = imagecodecs.jpeg8_decode(response.content)
                    expected_w = min(tile_size, lw - col * tile_size)
                    expected_h = min(tile_size, lh - row * tile_size)
                    assert tile.shape == (expected_h, expected_w, 3), (level, col, row)
                    fetched += 1
        assert fetched == 9 + 4 + 12  # levels 0..8 are one tile each, then 2x2 and 4x3

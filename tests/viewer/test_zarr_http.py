"""The Zarr store over HTTP: zarr-python reads it through fsspec's HTTP filesystem."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from fastapi.testclient import TestClient

import tiling  # noqa: F401  (registers the iain.jpeg codec with zarr)


def test_zarr_python_reads_the_pyramid_over_http(
    live_server: str, slide_ids: dict[str, str], pixels: np.ndarray
) -> None:
    group = zarr.open_group(f"{live_server}/zarr/{slide_ids['alpha']}", mode="r")
    multiscales = group.attrs["ome"]["multiscales"][0]
    assert [d["path"] for d in multiscales["datasets"]] == ["0", "1", "2"]
    level0 = group["0"]
    assert level0.shape == (3, 700, 1000)
    region = np.asarray(level0[:, 300:500, 900:1000]).transpose(1, 2, 0)
    assert np.abs(region.astype(int) - pixels[300:500, 900:1000].astype(int)).mean() < 4
    assert "associated" not in group  # never exposed


@pytest.mark.parametrize(
    "key",
    [
        "associated/zarr.json",
        "associated/label/zarr.json",
        "0/../associated/zarr.json",
        "0/c/0/0/99",  # a chunk that does not exist
        "../alpha.zarr/zarr.json",
        "0/c/0/0/0/../../../../../associated/label/zarr.json",
        "0%2Fzarr.json",
        "zarr.json%00",
        ".zattrs",
        "",
    ],
)
def test_only_level_and_label_keys_are_served(
    client: TestClient, slide_ids: dict[str, str], key: str
) -> None:
    response = client.get(f"/zarr/{slide_ids['alpha']}/{key}")
    assert response.status_code in (400, 404)
    assert "PATIENT" not in response.text


def test_chunk_keys_are_the_stored_bytes_and_cacheable(
    client: TestClient, slide_ids: dict[str, str]
) -> None:
    response = client.get(f"/zarr/{slide_ids['alpha']}/1/c/0/1/0")
    assert response.status_code == 200 and response.content[:2] == b"\xff\xd8"
    assert response.headers["cache-control"].endswith("immutable")
    again = client.get(
        f"/zarr/{slide_ids['alpha']}/1/c/0/1/0", headers={"If-None-Match": response.headers["etag"]}
    )
    assert again.status_code == 304

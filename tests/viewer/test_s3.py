"""``--data s3://...``: the same slides, ids and bytes from moto's real S3 server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import s3fs
from fastapi.testclient import TestClient
from moto.server import ThreadedMotoServer

from tests.viewer.conftest import free_port, make_settings
from tiling.layout import chunk_key
from viewer.app import create_app


@pytest.fixture(scope="module")
def s3_client(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    with pytest.MonkeyPatch.context() as env:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            env.setenv(name, "testing")
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        fs = s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True)
        # moto's backend is per process: another test module may own a bucket "slides" already
        bucket = f"viewer-{uuid.uuid4().hex[:12]}"
        fs.mkdir(bucket)
        for name in ("alpha.zarr", "sparse.zarr"):
            fs.put(str(data_dir / name), f"{bucket}/pyramids/{name}", recursive=True)
        settings = make_settings(
            f"s3://{bucket}/pyramids",
            tmp_path_factory.mktemp("s3-cache"),
            s3_endpoint_url=endpoint,
        )
        with TestClient(create_app(settings)) as client:
            yield client
    server.stop()


def test_s3_catalogue_matches_local(s3_client: TestClient, slide_ids: dict[str, str]) -> None:
    slides = {s["name"]: s["id"] for s in s3_client.get("/api/slides").json()}
    assert slides == {"alpha": slide_ids["alpha"], "sparse": slide_ids["sparse"]}
    assert s3_client.get("/readyz").json()["pyramids"] == 2


def test_s3_tiles_are_the_stored_bytes(
    s3_client: TestClient, slide_ids: dict[str, str], data_dir: Path, client: TestClient
) -> None:
    slide = slide_ids["alpha"]
    tile = s3_client.get(f"/slides/{slide}_files/10/1_1.jpeg")
    assert tile.content == (data_dir / "alpha.zarr" / chunk_key(0, 1, 1)).read_bytes()
    edge = s3_client.get(f"/slides/{slide}_files/10/3_2.jpeg")
    local_edge = client.get(f"/slides/{slide}_files/10/3_2.jpeg")
    assert edge.content == local_edge.content and edge.headers["etag"] == local_edge.headers["etag"]
    assert s3_client.get(f"/zarr/{slide}/0/zarr.json").json()["shape"] == [3, 700, 1000]
    assert s3_client.get(f"/zarr/{slide}/associated/label/zarr.json").status_code == 404
    white = s3_client.get(f"/slides/{slide_ids['sparse']}_files/10/1_0.jpeg")
    assert white.status_code == 200  # a chunk never written is white, on S3 too

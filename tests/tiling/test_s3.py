"""s3:// output through zarr's FsspecStore, against moto's real S3 server on 127.0.0.1."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import s3fs
import zarr
from moto.server import ThreadedMotoServer
from zarr.storage import FsspecStore

from tests.tiling.conftest import block_pixels
from tests.tiling.readers import ArrayReader
from tiling.config import TilingConfig
from tiling.convert import build_pyramid
from tiling.errors import OutputExistsError, SourceReadError
from tiling.read import PyramidReader


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def s3_config() -> Iterator[TilingConfig]:
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    options = {"endpoint_url": f"http://127.0.0.1:{port}", "key": "test", "secret": "test"}
    try:
        fs = s3fs.S3FileSystem(**options)
        fs.makedirs("slides", exist_ok=True)  # moto state is per process, shared by modules
        yield TilingConfig(s3_options=options)
    finally:
        server.stop()


def test_s3_output_reads_back(s3_config: TilingConfig, source_file: Path) -> None:
    pixels = block_pixels(700, 600)
    url = "s3://slides/a.zarr"
    spec = build_pyramid(ArrayReader(pixels, source_file), url, config=s3_config)
    pyramid = PyramidReader(url, config=s3_config)
    assert pyramid.spec == spec and pyramid.level_count == 3
    assert np.abs(pyramid.read_region(0, 0, 0, 700, 600).astype(int) - pixels).mean() < 2
    assert pyramid.read_chunk_bytes(0, 2, 2) is not None
    store = FsspecStore.from_url(url, storage_options=dict(s3_config.s3_options), read_only=True)
    array = zarr.open_group(store, mode="r")["1"]
    assert isinstance(array, zarr.Array) and array.shape == (3, 300, 350)
    fs = s3fs.S3FileSystem(**s3_config.s3_options)
    assert not fs.exists("slides/a.zarr/.iain-build.json")
    with pytest.raises(OutputExistsError):
        build_pyramid(ArrayReader(pixels, source_file), url, config=s3_config)


def test_s3_failed_build_publishes_no_root(s3_config: TilingConfig, source_file: Path) -> None:
    url = "s3://slides/bad.zarr"
    reader = ArrayReader(block_pixels(600, 600), source_file, fail_at=(256, 256))
    with pytest.raises(SourceReadError):
        build_pyramid(reader, url, config=s3_config)
    fs = s3fs.S3FileSystem(**s3_config.s3_options)
    assert not fs.exists("slides/bad.zarr/zarr.json")

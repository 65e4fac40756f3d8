"""The pipeline over a real dask.distributed LocalCluster: per slide and per region tasks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import zarr
from distributed import Client, LocalCluster

from inference.distributed import infer_distributed
from inference.engine import EngineOptions
from tests.inference.helpers import write_store

TOY = "tests.inference.helpers:colour_factory"
Regions = tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]


def test_slides_and_regions_on_a_local_cluster(tmp_path: Path, regions: Regions) -> None:
    whole = write_store(tmp_path / "whole.zarr", regions[0])
    split = write_store(tmp_path / "split.zarr", regions[0])
    options = EngineOptions(unit_chunks=1)
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        (one,) = infer_distributed(client, [whole], TOY, options=options)
        (many,) = infer_distributed(client, [split], TOY, options=options, regions_per_slide=3)
    assert many["regions"] == 3
    assert one["patches_run"] == many["patches_run"] > 0
    for k in ("0", "1", "2"):
        a = zarr.open_array(str(whole / "labels/toy" / k), mode="r")[:]
        b = zarr.open_array(str(split / "labels/toy" / k), mode="r")[:]
        np.testing.assert_array_equal(a, b)
    assert (split / "labels" / "toy.geojson").exists()
    assert not (split / "labels" / "toy" / ".progress").exists()

"""Third-party readers (ome-zarr-py, ome-zarr-models' NGFF 0.5 schema), the CLI, bounded memory."""

from __future__ import annotations

import json
import tracemalloc
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
import zarr
from ome_zarr.io import parse_url
from ome_zarr.reader import Multiscales, Reader
from ome_zarr_models.v05.image import Image

from tests.tiling.conftest import block_pixels
from tests.tiling.readers import ArrayReader, SyntheticReader, TiffJpegReader
from tiling.__main__ import main
from tiling.config import TilingConfig
from tiling.convert import build_pyramid


@pytest.fixture()
def cmu_pyramid(cmu_svs: Path, tmp_path: Path) -> Path:
    out = tmp_path / "cmu.zarr"
    with closing(TiffJpegReader(cmu_svs)) as reader:
        build_pyramid(reader, out)
    return out


def test_ome_zarr_py_reads_multiscales_as_rgb(cmu_pyramid: Path) -> None:
    location = parse_url(str(cmu_pyramid))
    assert location is not None
    node = next(iter(Reader(location)()))
    assert any(isinstance(spec, Multiscales) for spec in node.specs)
    assert [tuple(d.shape) for d in node.data][:2] == [(3, 2967, 2220), (3, 1484, 1110)]
    assert node.metadata["channel_names"] == ["red", "green", "blue"]
    window = np.asarray(node.data[1][:, 700:750, 500:560].compute())
    direct = np.asarray(zarr.open_group(cmu_pyramid, mode="r")["1"][:, 700:750, 500:560])
    assert np.array_equal(window, direct) and window.std() > 5  # real tissue, not fill


def test_metadata_validates_against_ngff_05(cmu_pyramid: Path, tmp_path: Path) -> None:
    image = Image.from_zarr(zarr.open_group(cmu_pyramid, mode="r"))
    multiscale = image.attributes.ome.multiscales[0]
    assert [d.path for d in multiscale.datasets] == ["0", "1", "2", "3", "4"]
    assert multiscale.axes[1].unit == "micrometer"
    # also with associated images present (a sibling group the schema must tolerate)
    source = tmp_path / "s.bin"
    source.write_bytes(b"s")
    label = np.zeros((20, 30, 3), np.uint8)
    out = tmp_path / "assoc.zarr"
    build_pyramid(ArrayReader(block_pixels(300, 300), source, associated={"label": label}), out)
    Image.from_zarr(zarr.open_group(out, mode="r"))


def test_cli_bad_inputs_one_line_exit_2_nothing_left(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bad_slides_dir: Path
) -> None:
    bad = sorted(bad_slides_dir.iterdir())
    assert len(bad) >= 8
    for slide in [tmp_path / "missing.svs", *bad]:
        if slide.name.endswith(".md"):
            continue
        out = tmp_path / "out.zarr"
        assert main(["convert", str(slide), str(out)]) == 2, slide.name
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert slide.name in err and "[" in err  # names the file, ends with the error code
        assert sorted(p.name for p in tmp_path.iterdir()) == [], slide.name


def test_cli_converts_a_real_slide_with_json_progress(
    cmu_svs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cmu.zarr"
    assert main(["convert", str(cmu_svs), str(out), "--json-progress", "--mpp", "0.25"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[-1]["event"] == "published" and lines[-1]["done"] == lines[-1]["total"] == 182
    iain = zarr.open_group(out, mode="r").attrs["iain"]
    assert isinstance(iain, dict)
    assert iain["mpp"] == {"x": 0.25, "y": 0.25, "source": "override"}
    assert iain["backend"] == "openslide" and iain["level0"] == "copied"


def test_cli_rejects_bad_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["convert", "x.svs", str(tmp_path / "o.zarr"), "--quality", "0"]) == 2
    assert "quality 0 not in 1..100" in capsys.readouterr().err
    assert main(["frobnicate"]) == 2


def _peak_bytes(width: int, height: int, source: Path, out: Path) -> int:
    tracemalloc.start()
    try:
        build_pyramid(SyntheticReader(width, height, source), out, config=TilingConfig(workers=2))
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_grows_with_width_not_height(source_file: Path, tmp_path: Path) -> None:
    # both past the reduced-level step sample's cap (128 level-0 tiles): a constant ~8 MB
    short = _peak_bytes(4096, 2048, source_file, tmp_path / "short.zarr")
    tall = _peak_bytes(4096, 8192, source_file, tmp_path / "tall.zarr")  # 4x the area
    assert tall < 1.3 * short, (short, tall)  # O(area) would be ~4x
    assert tall < 40 * 2**20

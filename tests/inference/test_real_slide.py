"""The registered model on a real slide: ``iain convert`` then ``iain infer`` (issue 6)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import zarr

from inference.spec import ModelSpec
from viewer.cli import main as iain


def test_registered_model_on_the_cmu_sample(
    slides_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "cmu.zarr"
    assert iain(["convert", str(slides_dir / "CMU-1-Small-Region.svs"), str(store)]) == 0
    assert iain(["infer", str(store), "--model", "crc-tumour", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "glass skipped" in out
    attrs = json.loads((store / "labels" / "crc-tumour" / "zarr.json").read_text())["attributes"]
    assert attrs["iain"]["inference_level"] == 1  # 0.998 µm/px is nearest the card's 1.0
    assert attrs["iain"]["validation"] == "pending"
    colors = attrs["ome"]["image-label"]["colors"]
    assert colors[2]["rgba"][:3] == [0xD6, 0x27, 0x28]  # the card's tumour colour
    mask = zarr.open_array(str(store / "labels" / "crc-tumour" / "0"), mode="r")
    assert mask.shape == (2967, 2220)
    assert json.loads((store / "labels" / "crc-tumour.geojson").read_text())["type"] == (
        "FeatureCollection"
    )


def test_card_becomes_a_spec() -> None:
    from models.registry import get_card

    spec = ModelSpec.from_card(get_card("crc-tumour"))
    assert spec.classes == ("background", "epithelium", "tumour")
    assert spec.tile_size_px == 256 and spec.overlap_px == 32 and spec.mpp == 1.0
    assert spec.colors[2] == (0xD6, 0x27, 0x28) and spec.mean == (0.5, 0.5, 0.5)

"""``iain info`` on good slides: text and JSON hold everything SlideInfo holds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wsi.__main__ import main


def test_info_json(slides_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(slides_dir / "CMU-1-Small-Region.svs"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["backend"] == "openslide" and data["vendor"] == "aperio"
    assert data["level_dimensions"] == [[2220, 2967]]
    assert data["mpp"] == {"x": 0.499, "y": 0.499, "source": "vendor"}
    assert data["objective_power"] == 20.0
    assert data["associated_images"] == ["label", "macro", "thumbnail"]
    assert data["stored_tiling"][0] == {
        "tile_width": 240,
        "tile_height": 240,
        "compression": "jpeg",
        "columns": 10,
        "rows": 13,
    }
    assert data["properties"]["aperio.AppMag"] == "20"


def test_info_text_with_override_and_backend(
    slides_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    slide = str(slides_dir / "boxes.tiff")
    assert main(["info", slide, "--mpp", "0.25", "--backend", "tifffile", "--properties"]) == 0
    out = capsys.readouterr().out
    assert "backend:     tifffile" in out
    assert "mpp:         0.25 x 0.25 µm/px (override)" in out
    assert "352.8" in out  # the ignored 72-dpi value is explained
    assert "icc profile: 588 bytes" in out
    assert "   3: 37 x 31  downsample 8.086" in out


def test_info_verify_decodes_everything(
    slides_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["info", str(slides_dir / "small.svs"), "--verify"]) == 0
    assert "stored jpeg tiles 64x64, 1x1" in capsys.readouterr().out


def test_info_bad_mpp_is_one_line(slides_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(slides_dir / "small.svs"), "--mpp", "500"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "outside 0.05..50" in err[0]

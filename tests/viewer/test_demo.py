"""``iain demo``: convert what ``wsi.open_slide`` accepts, report the rest, serve the result."""

from __future__ import annotations

from pathlib import Path

import imagecodecs
import pytest
from fastapi.testclient import TestClient

from tests.viewer.conftest import make_settings
from viewer.__main__ import main
from viewer.app import create_app


def test_demo_converts_real_slides_and_skips_bad_ones(
    slides_dir: Path, bad_slides_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    slides = tmp_path / "slides"
    slides.mkdir()
    for name in ("small.svs", "boxes.tiff"):
        (slides / name).symlink_to(slides_dir / name)
    bad = sorted(p for p in bad_slides_dir.iterdir() if p.is_file())[0]
    (slides / bad.name).symlink_to(bad)
    data = tmp_path / "data"
    assert main(["demo", "--slides", str(slides), "--data", str(data), "--no-serve"]) == 0
    out, err = capsys.readouterr()
    assert "converted small.svs" in out and "converted boxes.tiff" in out
    (skipped,) = err.strip().splitlines()
    assert skipped.startswith(f"skipped {bad.name}: ")
    assert sorted(p.name for p in data.glob("*.zarr")) == ["boxes.zarr", "small.zarr"]

    assert main(["demo", "--slides", str(slides), "--data", str(data), "--no-serve"]) == 0
    assert "converted" not in capsys.readouterr().out  # already there: not redone

    with TestClient(create_app(make_settings(data, tmp_path / "cache"))) as client:
        slides_json = {s["name"]: s for s in client.get("/api/slides").json()}
        small = slides_json["small.svs"]
        assert (small["width"], small["height"], small["vendor"]) == (16, 16, "aperio")
        assert small["mpp"] == {"x": 0.499, "y": 0.499}
        assert slides_json["boxes.tiff"]["mpp"] is None  # the 72-dpi mpp is not trusted
        tile = client.get(f"/slides/{small['id']}_files/4/0_0.jpeg")
        assert imagecodecs.jpeg8_decode(tile.content).shape == (16, 16, 3)
        boxes = slides_json["boxes.tiff"]
        tile = client.get(f"/slides/{boxes['id']}_files/9/1_0.jpeg")
        assert imagecodecs.jpeg8_decode(tile.content).shape == (250, 44, 3)

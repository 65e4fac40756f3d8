"""Atomic publish, kill -9 + resume, overwrite, and bad input leaving nothing behind."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.tiling.conftest import block_pixels
from tests.tiling.helpers import psnr
from tests.tiling.readers import REPO_ROOT, ArrayReader, SyntheticReader
from tiling.config import TilingConfig
from tiling.convert import Progress, build_pyramid
from tiling.errors import OutputExistsError, SourceReadError
from tiling.read import PyramidReader

SLOW_CONVERT = """
import sys
from pathlib import Path
from tests.tiling.readers import SyntheticReader
from tiling.config import TilingConfig
from tiling.convert import build_pyramid
reader = SyntheticReader(2048, 2048, Path(sys.argv[1]), delay_s=0.03)
build_pyramid(reader, sys.argv[2], config=TilingConfig(workers=1), overwrite=True)
"""


def _tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return digest.hexdigest()


def _kill_mid_write(source: Path, out: Path) -> Path:
    """Start a slow conversion, SIGKILL it once some chunks exist; returns the partial dir."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_CONVERT, str(source), str(out)], cwd=REPO_ROOT, env=env
    )
    try:
        deadline = time.monotonic() + 60
        partial: Path | None = None
        while time.monotonic() < deadline:
            found = list(out.parent.glob(f"{out.name}.partial-*"))
            if found and len(list(found[0].glob("0/c/0/*/*"))) >= 12:
                partial = found[0]
                break
            assert proc.poll() is None, "conversion ended before it could be killed"
            time.sleep(0.02)
        assert partial is not None, "no chunks appeared"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    return partial


def _resume(source: Path, out: Path) -> tuple[SyntheticReader, list[Progress]]:
    reader = SyntheticReader(2048, 2048, source)
    events: list[Progress] = []
    build_pyramid(reader, out, progress=events.append, overwrite=True)
    return reader, events


def test_kill9_leaves_nothing_then_rerun_resumes(source_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "slide.zarr"
    partial = _kill_mid_write(source_file, out)
    assert not out.exists()  # nothing published
    assert (partial / "0" / "zarr.json").exists()
    reader, events = _resume(source_file, out)
    assert not partial.exists()
    assert events[-1].skipped >= 12 and reader.reads <= 64 - 12  # present chunks not redone
    fresh = tmp_path / "fresh.zarr"
    build_pyramid(SyntheticReader(2048, 2048, source_file), fresh)
    resumed, clean = PyramidReader(out), PyramidReader(fresh)
    for level in range(clean.level_count):
        w, h = clean.spec.level_size(level)
        got, want = resumed.read_region(level, 0, 0, w, h), clean.read_region(level, 0, 0, w, h)
        assert psnr(got, want) > 40
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []
    assert list(out.rglob("*.tmp-*")) == []  # no half-written temp file got published


def test_kill9_during_overwrite_keeps_old_pyramid(source_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "slide.zarr"
    old_source = tmp_path / "old.bin"
    old_source.write_bytes(b"the old slide")
    build_pyramid(ArrayReader(block_pixels(300, 200), old_source), out)
    before = _tree_digest(out)
    _kill_mid_write(source_file, out)
    assert _tree_digest(out) == before  # the old complete pyramid, untouched
    _resume(source_file, out)
    assert PyramidReader(out).spec.width == 2048  # the new one, published by exchange
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.bin", "slide.zarr", "source.bin"]


def test_old_pyramid_stays_until_publish(source_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "slide.zarr"
    old_source = tmp_path / "old.bin"
    old_source.write_bytes(b"the old slide")
    build_pyramid(ArrayReader(block_pixels(300, 200), old_source), out)
    before = _tree_digest(out)
    seen: list[bool] = []

    def check(event: Progress) -> None:
        if event.phase == "tiles":
            seen.append(_tree_digest(out) == before)

    build_pyramid(ArrayReader(block_pixels(900, 900), source_file), out, overwrite=True,
                  progress=check)  # fmt: skip
    assert seen and all(seen)
    assert PyramidReader(out).spec.width == 900


def test_existing_output_needs_overwrite(source_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "slide.zarr"
    out.mkdir()
    with pytest.raises(OutputExistsError) as info:
        build_pyramid(ArrayReader(block_pixels(64, 64), source_file), out)
    assert info.value.code == "output_exists"
    assert list(out.iterdir()) == []


def test_slide_error_mid_way_leaves_nothing(source_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "slide.zarr"
    reader = ArrayReader(block_pixels(1024, 1024), source_file, fail_at=(512, 512))
    with pytest.raises(SourceReadError, match="corrupt tile at \\(512, 512\\)") as info:
        build_pyramid(reader, out, config=TilingConfig(workers=2))
    assert info.value.code == "source_read_failed"
    assert list(tmp_path.iterdir()) == [source_file]


def test_slide_error_keeps_existing_pyramid(source_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "slide.zarr"
    build_pyramid(ArrayReader(block_pixels(300, 200), source_file), out)
    before = _tree_digest(out)
    reader = ArrayReader(block_pixels(1024, 1024), source_file, fail_at=(0, 256))
    with pytest.raises(SourceReadError):
        build_pyramid(reader, out, overwrite=True)
    assert _tree_digest(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slide.zarr", "source.bin"]


def test_partial_from_other_settings_is_discarded(source_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "slide.zarr"
    pixels = block_pixels(600, 600)
    build_pyramid(ArrayReader(pixels, source_file), out)
    moved = out.rename(tmp_path / "x.zarr")
    # a stale partial of the same source but other settings must not be resumed
    marker = {"source_sha256": "x"}
    stale = tmp_path / f"slide.zarr.partial-{_sha12(source_file)}"
    stale.mkdir()
    (stale / ".iain-build.json").write_text(json.dumps(marker))
    (stale / "0" / "c" / "0" / "0").mkdir(parents=True)
    (stale / "0" / "c" / "0" / "0" / "0").write_bytes(b"not a jpeg")
    reader = ArrayReader(pixels, source_file)
    build_pyramid(reader, out)
    assert reader.reads == 2 * 9  # every level-0 tile read again, once more for the step sample
    got = PyramidReader(out).read_region(0, 0, 0, 600, 600)
    assert np.abs(got.astype(int) - pixels).mean() < 2
    assert moved.exists()


def _sha12(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]

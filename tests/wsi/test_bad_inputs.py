"""Every bad input is refused with the right error class, and ``iain info`` says so in one line.

The files come from ``slides/bad`` (see its MANIFEST) and from crafted TIFFs (conftest.py).
"""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import tifffile

import wsi
from wsi import (
    CorruptSlideError,
    SlideError,
    SlideNotFoundError,
    SlideTooLargeError,
    UnreadableRegionError,
    UnsupportedFormatError,
)
from wsi._sniff import sniff

REPO = Path(__file__).resolve().parents[2]

# file in slides/bad -> (error class from open_slide, or None when it opens and reading fails;
#                        words the message must contain)
OPEN_FAILS: dict[str, tuple[type[SlideError], str]] = {
    "CMU-1-Small-Region.truncated40.svs": (CorruptSlideError, "past the end of the file"),
    "tiff-header-garbage.tif": (CorruptSlideError, "tags"),
    "empty.svs": (UnsupportedFormatError, "empty file"),
    "png-renamed.svs": (UnsupportedFormatError, "PNG"),
    "huge-2pow31.tif": (SlideTooLargeError, "2147483648 x 2147483648"),
    "text-file.ndpi": (UnsupportedFormatError, "not a slide format"),
    "unopenable.tiff": (UnsupportedFormatError, "compression 52479"),
    "broken.svs": (UnsupportedFormatError, "not a slide format"),
}
READ_FAILS = {
    "unreadable.svs": "Bogus marker length",
    "dicom-missing-frame": "too few frames",
}


def test_manifest_is_covered(bad_slides_dir: Path) -> None:
    present = {p.name for p in bad_slides_dir.iterdir() if p.name != "MANIFEST.md"}
    assert present == set(OPEN_FAILS) | set(READ_FAILS)


@pytest.mark.parametrize("name", sorted(OPEN_FAILS))
def test_bad_file_refused_at_open(bad_slides_dir: Path, name: str) -> None:
    error, words = OPEN_FAILS[name]
    with pytest.raises(error) as caught:
        wsi.open_slide(bad_slides_dir / name)
    assert type(caught.value) is error
    assert str(caught.value).startswith(f"{name}: ") and words in str(caught.value)
    for entry in wsi.BACKENDS:  # no default backend claims it either
        assert not (entry.default and entry.can_open(bad_slides_dir / name))


@pytest.mark.parametrize("name", sorted(READ_FAILS))
def test_bad_pixels_refused_at_read_and_handle_dropped(bad_slides_dir: Path, name: str) -> None:
    with wsi.open_slide(bad_slides_dir / name) as reader:
        with pytest.raises(UnreadableRegionError, match=READ_FAILS[name]):
            reader.read_region((0, 0), 0, reader.tile_size)
        # OpenSlide's handle is unusable after an error: every later read says so, even elsewhere
        with pytest.raises(UnreadableRegionError, match="unusable"):
            reader.read_region((0, 0), len(reader.level_dimensions) - 1, (1, 1))


def test_missing_dicom_frame_refused_in_stored_tiles(bad_slides_dir: Path) -> None:
    with wsi.open_slide(bad_slides_dir / "dicom-missing-frame") as reader:
        assert reader.stored_tiling(1) is not None
        reader.read_stored_tile(1, 0, 0)  # the intact levels still copy
        with pytest.raises(UnreadableRegionError, match="29 JPEG fragments for 30 frames"):
            reader.read_stored_tile(0, 0, 0)


def test_tifffile_backend_refuses_corrupt_tile(bad_slides_dir: Path) -> None:
    with (
        wsi.open_slide(bad_slides_dir / "unreadable.svs", backend="tifffile") as reader,
        pytest.raises(UnreadableRegionError, match=r"unreadable\.svs"),
    ):
        reader.read_region((0, 0), 0, (16, 16))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SlideNotFoundError) as caught:
        wsi.open_slide(tmp_path / "nope.svs")
    assert isinstance(caught.value, FileNotFoundError) and caught.value.code == "slide_not_found"


def test_directory_without_slides(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UnsupportedFormatError, match="no DICOM or MIRAX"):
        wsi.open_slide(tmp_path)


def test_crafted_huge(huge_tiff: Path) -> None:
    with pytest.raises(SlideTooLargeError, match="1000000 x 1000000"):
        wsi.open_slide(huge_tiff)


def test_crafted_ifd_loop(loop_tiff: Path) -> None:
    with pytest.raises(CorruptSlideError, match="loops back"):
        wsi.open_slide(loop_tiff)


def test_crafted_offsets_past_end(offsets_past_end_tiff: Path) -> None:
    with pytest.raises(CorruptSlideError, match=r"tile 2 .* past the end"):
        wsi.open_slide(offsets_past_end_tiff)


@pytest.mark.parametrize("backend", ["openslide", "tifffile"])
def test_crafted_corrupt_middle_tile(corrupt_middle_jpeg_tiff: Path, backend: str) -> None:
    with wsi.open_slide(corrupt_middle_jpeg_tiff, backend=backend) as reader:
        assert reader.read_region((0, 0), 0, (64, 64)).shape == (64, 64, 3)  # tile 0 decodes
        with pytest.raises(UnreadableRegionError, match=r"corrupt-middle\.tif"):
            reader.read_region((64, 64), 0, (64, 64))


def test_unknown_backend(slides_dir: Path) -> None:
    with pytest.raises(UnsupportedFormatError, match="unknown backend"):
        wsi.open_slide(slides_dir / "small.svs", backend="vips")


def test_backend_that_does_not_claim(slides_dir: Path) -> None:
    with pytest.raises(UnsupportedFormatError, match="by backend 'tifffile'"):
        wsi.open_slide(slides_dir / "test3-DAPI-2-(387).ndpi", backend="tifffile")


def _iain_info(path: Path) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Run ``iain info PATH``; return the child's CPU seconds (robust to a busy machine)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        [sys.executable, "-m", "viewer.cli", "info", str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,  # a blocked (not spinning) hang; spinning shows in the CPU time
        check=False,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, done


def _bad_paths(bad_slides_dir: Path) -> list[Path]:
    return sorted(p for p in bad_slides_dir.iterdir() if p.name != "MANIFEST.md")


def test_iain_info_refuses_every_bad_input(
    bad_slides_dir: Path,
    huge_tiff: Path,
    loop_tiff: Path,
    offsets_past_end_tiff: Path,
    corrupt_middle_jpeg_tiff: Path,
) -> None:
    crafted = [huge_tiff, loop_tiff, offsets_past_end_tiff, corrupt_middle_jpeg_tiff]
    paths = _bad_paths(bad_slides_dir) + crafted
    for path in paths:
        cpu_s, done = _iain_info(path)
        assert cpu_s < 5, path
        assert done.returncode == 2, (path, done.stdout, done.stderr)
        assert done.stdout == ""
        lines = done.stderr.splitlines()
        assert len(lines) == 1, (path, done.stderr)
        assert lines[0].startswith(f"iain info: {path}: ") and len(lines[0]) > len(str(path)) + 14
        assert "Traceback" not in done.stderr


def test_crafted_tile_count_cap(tmp_path: Path) -> None:
    """Within the pixel limit (2^36 px) but 2^28 tiny tiles: refused before reading offsets."""
    path = tmp_path / "many-tiles.tif"
    tifffile.imwrite(path, np.zeros((16, 16, 3), np.uint8), tile=(16, 16), photometric="rgb")
    with tifffile.TiffFile(path, mode="r+b") as tif:
        tif.pages.first.tags["ImageWidth"].overwrite(1 << 20)
        tif.pages.first.tags["ImageLength"].overwrite(1 << 16)
    with pytest.raises(SlideTooLargeError, match="268435456 tiles"):
        wsi.open_slide(path)


def test_sniff_is_cached_but_sees_rewrites(tmp_path: Path) -> None:
    path = tmp_path / "changing.tif"
    tifffile.imwrite(path, np.zeros((64, 64, 3), np.uint8), tile=(64, 64), photometric="rgb")
    with wsi.open_slide(path) as reader:
        assert reader.level_dimensions == ((64, 64),)
    path.write_bytes(b"not a tiff any more")
    with pytest.raises(UnsupportedFormatError):
        wsi.open_slide(path)


def test_open_time_limit(slides_dir: Path) -> None:
    with pytest.raises(wsi.ParseTimeoutError, match="longer than 1e-06 s") as caught:
        wsi.open_slide(slides_dir / "CMU-1-Small-Region.svs", timeout_s=1e-6)
    assert caught.value.code == "parse_timeout"


def test_dicom_declaring_huge_matrix(slides_dir: Path, tmp_path: Path) -> None:
    ds = pydicom.dcmread(slides_dir / "boxes-dicom" / "boxes_0.dcm")
    ds.TotalPixelMatrixColumns = 10_000_000
    ds.save_as(tmp_path / "huge.dcm")
    with pytest.raises(SlideTooLargeError, match="10000000 x 16"):
        wsi.open_slide(tmp_path / "huge.dcm")


def test_dicom_that_is_not_a_slide(slides_dir: Path, tmp_path: Path) -> None:
    ds = pydicom.dcmread(slides_dir / "boxes-dicom" / "boxes_0.dcm")
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"  # CT Image Storage
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.save_as(tmp_path / "ct.dcm")
    with pytest.raises(UnsupportedFormatError, match="not a whole-slide image"):
        wsi.open_slide(tmp_path / "ct.dcm")


def test_tiff_tag_pointing_past_the_end(tmp_path: Path) -> None:
    path = tmp_path / "desc-past-end.tif"
    tifffile.imwrite(
        path, np.zeros((64, 64, 3), np.uint8), tile=(64, 64), description="x" * 100, metadata=None
    )
    with tifffile.TiffFile(path) as tif:
        entry = tif.pages.first.tags["ImageDescription"].offset
    with path.open("r+b") as fh:
        fh.seek(entry + 8)  # classic TIFF entry: tag, type, count, then the value offset
        fh.write((10**8).to_bytes(4, "little"))
    with pytest.raises(CorruptSlideError, match=r"TIFF tag 270 .* past the end"):
        wsi.open_slide(path)


def test_mirax_folder_resolves_to_its_index(tmp_path: Path) -> None:
    """No real MIRAX sample exists here; the pairing rule is still checked on crafted files."""
    (tmp_path / "slide").mkdir()
    (tmp_path / "slide" / "Slidedat.ini").write_text("[GENERAL]\nSLIDE_VERSION = 01.02\n")
    (tmp_path / "slide.mrxs").write_text("[GENERAL]\nSLIDE_ID = x\n")
    assert sniff(tmp_path / "slide").file == tmp_path / "slide.mrxs"
    assert sniff(tmp_path).file == tmp_path / "slide.mrxs"
    # OpenSlide takes the pair as MIRAX, then finds the stub's Slidedat.ini incomplete
    with pytest.raises(CorruptSlideError, match="SLIDE_ID"):
        wsi.open_slide(tmp_path / "slide")


@pytest.mark.parametrize("backend", ["openslide", "tifffile"])
def test_closed_reader_refuses_reads(slides_dir: Path, backend: str) -> None:
    reader = wsi.open_slide(slides_dir / "small.svs", backend=backend)
    reader.close()
    reader.close()  # idempotent
    for call in (
        lambda: reader.read_region((0, 0), 0, (4, 4)),
        lambda: reader.read_stored_tile(0, 0, 0),
    ):
        with pytest.raises(UnreadableRegionError, match="closed"):
            call()


def test_raw_tiles_survive_an_openslide_decode_error(bad_slides_dir: Path) -> None:
    with wsi.open_slide(bad_slides_dir / "unreadable.svs") as reader:
        with pytest.raises(UnreadableRegionError):
            reader.read_region((0, 0), 0, (16, 16))
        assert reader.read_stored_tile(0, 0, 0).startswith(b"\xff\xd8")

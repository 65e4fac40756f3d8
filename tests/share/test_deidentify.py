"""De-identification by construction: the canary test and the allow-list."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import openslide
import pytest
from PIL import Image

from share.deidentify import (
    SharedRegion,
    derive_shared_pyramid,
    read_shared_pyramid_info,
    shared_tile_path,
    strip_jpeg_metadata,
)
from share.federation_errors import (
    DerivedExistsError,
    InvalidPseudonymError,
    InvalidRegionError,
    SourcePyramidError,
)
from tests.share.conftest_federation import (
    CANARIES,
    CANARY_FILE_NAME,
    CanarySlide,
    canary_pyramid,
    canary_slide,
    converted_canary,
    write_leaky_pyramid,
)
from tiling.layout import chunk_key

__all__ = ["canary_pyramid", "canary_slide", "converted_canary"]  # fixtures used by name

PSEUDONYM = "SHR-7f3a9c"


def _needles(slide: CanarySlide) -> list[bytes]:
    texts = [*CANARIES, CANARY_FILE_NAME, slide.path.stem, slide.sha256]
    needles = []
    for text in texts:
        needles += [text.encode(), text.lower().encode(), text.encode("utf-16-le")]
    return needles


def _all_files(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*") if path.is_file())


@pytest.fixture(scope="module")
def derived(canary_pyramid: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return derive_shared_pyramid(
        canary_pyramid, tmp_path_factory.mktemp("out") / "shared.zarr", pseudonym=PSEUDONYM
    )


def test_canary_slide_really_carries_identifiers(canary_slide: CanarySlide) -> None:
    """Guard: the planted identifiers are where a real reader finds them."""
    slide = openslide.OpenSlide(canary_slide.path)
    try:
        assert slide.properties["openslide.vendor"] == "aperio"
        assert slide.properties["aperio.Filename"] == "CANARY-PATIENT-4711"
        assert slide.properties["aperio.Barcode"] == "BC-CANARY-0042"
        assert set(slide.associated_images) >= {"label", "macro"}
    finally:
        slide.close()


def test_source_pyramid_leaks_so_the_test_has_teeth(
    canary_slide: CanarySlide, canary_pyramid: Path
) -> None:
    blob = b"".join(path.read_bytes() for path in _all_files(canary_pyramid))
    assert all(needle in blob for needle in (c.encode() for c in CANARIES[:4]))
    assert canary_slide.label.tobytes()[:4096] in blob


def test_no_canary_in_any_byte_of_the_derived_store(
    canary_slide: CanarySlide, derived: Path
) -> None:
    files = _all_files(derived)
    assert len(files) > 50
    for path in files:
        rel = str(path.relative_to(derived))
        data = path.read_bytes()
        for needle in _needles(canary_slide):
            assert needle not in data, f"{needle!r} leaked in {rel}"
            assert needle.decode("latin-1") not in rel


def test_real_converter_output_derives_without_canaries(
    canary_slide: CanarySlide, converted_canary: Path, tmp_path: Path
) -> None:
    """The same canary slide through ``tiling.convert``: identifiers in, none out."""
    source_blob = b"".join(path.read_bytes() for path in _all_files(converted_canary))
    assert canary_slide.path.name.encode() in source_blob  # guard: the converter keeps them
    assert canary_slide.sha256.encode() in source_blob
    assert (converted_canary / "associated" / "label").is_dir()
    out = derive_shared_pyramid(converted_canary, tmp_path / "shared.zarr", pseudonym=PSEUDONYM)
    for path in _all_files(out):
        data = path.read_bytes()
        for needle in _needles(canary_slide):
            assert needle not in data, f"{needle!r} leaked in {path.relative_to(out)}"
    assert not (out / "associated").exists()
    info = read_shared_pyramid_info(out)
    assert (info.width, info.height, info.mpp_x, info.objective_power) == (2220, 2967, 0.499, 20)
    key = chunk_key(0, 1, 1)
    assert strip_jpeg_metadata((converted_canary / key).read_bytes()) == (out / key).read_bytes()


def test_derived_store_reads_back_with_zarr(converted_canary: Path, tmp_path: Path) -> None:
    """Third-party readers see the same pixels (the iain.jpeg codec, rebuilt metadata)."""
    import zarr

    out = derive_shared_pyramid(converted_canary, tmp_path / "shared.zarr", pseudonym=PSEUDONYM)
    source: Any = zarr.open_group(converted_canary, mode="r")  # zarr's unions: checked below
    shared: Any = zarr.open_group(out, mode="r")
    assert shared["0"].shape == source["0"].shape == (3, 2967, 2220)
    assert np.array_equal(shared["0"][:, 200:700, 300:900], source["0"][:, 200:700, 300:900])
    assert shared.attrs["ome"]["multiscales"][0]["name"] == PSEUDONYM


def test_hostile_level_metadata_is_rebuilt_or_refused(canary_pyramid: Path, tmp_path: Path) -> None:
    source = tmp_path / "hostile.zarr"
    shutil.copytree(canary_pyramid, source)
    meta_path = source / "0" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["chunk_grid"]["configuration"]["note"] = "CANARY-PATIENT-4711"
    meta["chunk_key_encoding"]["configuration"]["extra"] = "CANARY-PATIENT-4711"
    meta["codecs"][0]["configuration"]["order"] = ["CANARY-PATIENT-4711", 1, 2]
    meta["codecs"][1]["configuration"]["subsampling"] = "CANARY-PATIENT-4711"
    meta["fill_value"] = "CANARY-PATIENT-4711"
    meta["dimension_names"] = ["CANARY-PATIENT-4711", "y", "x"]
    meta_path.write_text(json.dumps(meta))
    out = derive_shared_pyramid(source, tmp_path / "out.zarr", pseudonym="H")
    assert b"CANARY" not in (out / "0" / "zarr.json").read_bytes()
    meta["shape"] = [3, "CANARY-PATIENT-4711", 10]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(SourcePyramidError, match=r"\(3, y, x\) uint8"):
        derive_shared_pyramid(source, tmp_path / "out2.zarr", pseudonym="H")


def test_dicom_patient_attributes_never_leave(slides_dir: Path, tmp_path: Path) -> None:
    """A real DICOM WSI series with planted patient attributes, through the real converter."""
    import pydicom

    from tiling.convert import build_pyramid
    from wsi import open_slide

    series = tmp_path / "CANARY-PATIENT-4711_series"
    series.mkdir()
    planted = {
        "PatientName": "CANARY^PATIENT^4711",
        "PatientID": "CANARY-PATIENT-4711",
        "PatientBirthDate": "19700101",
        "StudyDate": "19700101",
        "AccessionNumber": "BC-CANARY-0042",
        "ContainerIdentifier": "BC-CANARY-0042",
        "InstitutionName": "Hopital-Canary",
        "OperatorsName": "CANARY-OPERATOR-jdoe",
    }
    uids = set()
    for name in ("boxes_0.dcm", "boxes_1.dcm"):
        dataset = pydicom.dcmread(slides_dir / "boxes-dicom" / name)
        for keyword, value in planted.items():
            setattr(dataset, keyword, value)
        uids |= {str(dataset.SeriesInstanceUID), str(dataset.StudyInstanceUID)}
        dataset.save_as(series / name)
    reader = open_slide(series / "boxes_0.dcm")
    try:
        build_pyramid(reader, tmp_path / "src.zarr")
    finally:
        reader.close()
    source_blob = b"".join(path.read_bytes() for path in _all_files(tmp_path / "src.zarr"))
    assert series.name.encode() in source_blob  # guard: the converter names the series
    out = derive_shared_pyramid(tmp_path / "src.zarr", tmp_path / "out.zarr", pseudonym="D")
    blob = b"".join(path.read_bytes() for path in _all_files(out))
    for text in [*planted.values(), "1970", series.name, *uids]:
        assert text.encode() not in blob, f"{text} leaked"
    assert read_shared_pyramid_info(out).width == 16


def test_derived_store_holds_only_levels_and_metadata(derived: Path) -> None:
    info = read_shared_pyramid_info(derived)
    for path in _all_files(derived):
        parts = path.relative_to(derived).parts
        assert parts == ("zarr.json",) or (
            int(parts[0]) < info.level_count
            and (parts[1:] == ("zarr.json",) or parts[1:3] == ("c", "0"))
        ), parts
    assert not (derived / "associated").exists()
    assert not list(derived.parent.glob(".*tmp*"))  # the temp dir was renamed away


def test_label_and_macro_pixels_never_appear(canary_slide: CanarySlide, derived: Path) -> None:
    """OCR-free: raw label/macro bytes are absent, and every derived tile is a slide tile."""
    blob = b"".join(path.read_bytes() for path in _all_files(derived))
    for image in (canary_slide.label, canary_slide.macro):
        raw = image.tobytes()
        for start in range(0, len(raw) - 1024, len(raw) // 8):
            assert raw[start : start + 1024] not in blob
    info = read_shared_pyramid_info(derived)
    slide = openslide.OpenSlide(canary_slide.path)
    try:
        level0 = np.asarray(slide.read_region((0, 0), 0, (512, 512)).convert("RGB"))
    finally:
        slide.close()
    tile = np.asarray(Image.open(io.BytesIO(shared_tile_path(derived, 0, 1, 1).read_bytes())))
    assert tile.shape == (info.tile_height, info.tile_width, 3)
    assert np.abs(tile.astype(int) - level0[256:512, 256:512]).mean() < 4  # JPEG round trip


def test_allow_listed_metadata_and_pseudonym(derived: Path) -> None:
    root = json.loads((derived / "zarr.json").read_text())
    assert set(root["attributes"]) == {"ome", "iain"}
    iain = root["attributes"]["iain"]
    assert set(iain) <= {
        "pseudonym",
        "derived",
        "width",
        "height",
        "tile_width",
        "tile_height",
        "level_count",
        "mpp_x",
        "mpp_y",
        "objective_power",
        "icc_profile_base64",
    }
    assert root["attributes"]["ome"]["multiscales"][0]["name"] == PSEUDONYM
    info = read_shared_pyramid_info(derived)
    assert (info.pseudonym, info.width, info.height) == (PSEUDONYM, 2220, 2967)
    assert (info.tile_width, info.level_count, info.mpp_x, info.objective_power) == (
        256,
        5,
        0.499,
        20.0,
    )
    level = json.loads((derived / "0" / "zarr.json").read_text())
    assert "attributes" not in level
    assert level["codecs"][1] == {"name": "iain.jpeg", "configuration": {"quality": 85}}


def test_clean_chunks_are_hard_linked(canary_pyramid: Path, tmp_path: Path) -> None:
    """A chunk with nothing to strip is linked, not rewritten (no decode, no copy)."""
    first = derive_shared_pyramid(canary_pyramid, tmp_path / "clean.zarr", pseudonym="A")
    second = derive_shared_pyramid(first, tmp_path / "again.zarr", pseudonym="B")
    key = chunk_key(0, 2, 3)
    assert os.stat(first / key).st_ino == os.stat(second / key).st_ino
    assert (first / key).read_bytes() == (second / key).read_bytes()


def test_strip_jpeg_metadata_keeps_pixels() -> None:
    tile = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x010E] = "CANARY-PATIENT-4711"
    Image.fromarray(tile).save(buffer, "JPEG", comment=b"CANARY", exif=exif.tobytes())
    dirty = buffer.getvalue() + b"CANARY-TRAILER"
    clean = strip_jpeg_metadata(dirty)
    assert b"CANARY" not in clean
    assert np.array_equal(
        np.asarray(Image.open(io.BytesIO(clean))), np.asarray(Image.open(io.BytesIO(dirty)))
    )
    assert strip_jpeg_metadata(clean) == clean
    with pytest.raises(SourcePyramidError, match="not a JPEG"):
        strip_jpeg_metadata(b"PNG-or-anything")


def test_bad_inputs_give_specific_errors(canary_pyramid: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidPseudonymError):
        derive_shared_pyramid(canary_pyramid, tmp_path / "x", pseudonym="../etc/passwd")
    (tmp_path / "taken").mkdir()
    with pytest.raises(DerivedExistsError):
        derive_shared_pyramid(canary_pyramid, tmp_path / "taken", pseudonym="P")
    with pytest.raises(SourcePyramidError, match="not an IAIN pyramid"):
        derive_shared_pyramid(tmp_path / "nowhere", tmp_path / "y", pseudonym="P")
    evil = tmp_path / "evil.zarr"
    evil.mkdir()
    (evil / "zarr.json").write_text(
        json.dumps(
            {"attributes": {"ome": {"multiscales": [{"datasets": [{"path": "associated"}]}]}}}
        )
    )
    with pytest.raises(SourcePyramidError, match=r"levels 0\.\.n"):
        derive_shared_pyramid(evil, tmp_path / "z", pseudonym="P")
    assert not (tmp_path / "z").exists()


REAL_SLIDES_WITH_ASSOCIATED = [
    "CMU-1-Small-Region.svs",  # label, macro, thumbnail
    "test3-DAPI-2-(387).ndpi",  # macro
    "small.svs",  # thumbnail; smaller than one tile
    "boxes-dicom/boxes_0.dcm",  # DICOM, thumbnail
]


@pytest.mark.parametrize("name", REAL_SLIDES_WITH_ASSOCIATED)
def test_real_slides_vendor_data_and_associated_images_stay_home(
    slides_dir: Path, tmp_path: Path, name: str
) -> None:
    """Every real sample slide with associated images: none of its identifying bytes leave."""
    source = slides_dir / name
    pyramid = write_leaky_pyramid(source, tmp_path / "src.zarr", max_side=1024)
    out = derive_shared_pyramid(pyramid, tmp_path / "shared.zarr", pseudonym="REAL-1")
    blob = b"".join(path.read_bytes() for path in _all_files(out))
    slide = openslide.OpenSlide(source)
    try:
        values = {v for k, v in slide.properties.items() if not k.startswith("openslide.level")}
    finally:
        slide.close()
    texts = {v for v in values if len(v) >= 5 and not _is_number(v)} | {source.name, source.stem}
    source_blob = b"".join(path.read_bytes() for path in _all_files(pyramid))
    assert texts and all(_found(source_blob, text) for text in texts), "guard: source leaks"
    for text in texts:
        assert not _found(blob, text), f"{text!r} leaked"
    images = list((pyramid / "associated").glob("*/raw.rgb"))
    assert images, "guard: the slide has associated images"
    for image in images:
        raw = image.read_bytes()
        for start in range(0, max(1, len(raw) - 256), max(1, len(raw) // 16)):
            assert raw[start : start + 256] not in blob
    assert read_shared_pyramid_info(out).pseudonym == "REAL-1"


def _forms(text: str) -> set[bytes]:
    """The text as plain bytes and as it appears inside JSON (\\r\\n escaped, etc.)."""
    return {text.encode(), json.dumps(text)[1:-1].encode()}


def _found(blob: bytes, text: str) -> set[bytes]:
    return {form for form in _forms(text) if form in blob}


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _tile(root: Path, level: int, col: int, row: int) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(shared_tile_path(root, level, col, row).read_bytes())))


def test_region_share_holds_only_that_region_at_every_level(
    canary_pyramid: Path, canary_slide: CanarySlide, tmp_path: Path
) -> None:
    region = SharedRegion(x=300, y=400, width=600, height=500)  # level-0 pixels
    out = derive_shared_pyramid(canary_pyramid, tmp_path / "r.zarr", pseudonym="R", region=region)
    assert read_shared_pyramid_info(out).region == region
    level0 = {path.relative_to(out / "0/c/0").parts for path in (out / "0/c/0").rglob("*")}
    files = {(int(c), int(r)) for r, c in (p for p in level0 if len(p) == 2)}
    assert files == {(c, r) for c in (1, 2, 3) for r in (1, 2, 3)}
    key = chunk_key(0, 2, 2)  # wholly inside: the stored JPEG, cleaned, never re-encoded
    assert (out / key).read_bytes() == strip_jpeg_metadata((canary_pyramid / key).read_bytes())
    corner = _tile(out, 0, 1, 1).astype(int)  # tile spans 256..512; region starts at 300, 400
    source = _tile(canary_pyramid, 0, 1, 1).astype(int)
    assert corner[:136, :].min() >= 252 and corner[:, :36].min() >= 252  # outside: white
    assert np.abs(corner[150:, 50:] - source[150:, 50:]).mean() < 4  # inside: the slide
    assert source[:136, :].min() < 250 and source[:, :36].min() < 250  # guard: glass is < 250
    coarse = _tile(out, 4, 0, 0).astype(int)  # the whole slide in one tile at 1/16
    whole = _tile(canary_pyramid, 4, 0, 0).astype(int)
    x0, y0, x1, y1 = region.at_level(4)
    assert coarse[y1 + 2 :, :].min() >= 245 and coarse[:, x1 + 2 :].min() >= 245
    assert whole[y1 + 2 : 180, :x1].mean() < 235  # guard: tissue the region excludes
    assert np.abs(coarse[y0:y1, x0:x1] - whole[y0:y1, x0:x1]).mean() < 4
    blob = b"".join(path.read_bytes() for path in _all_files(out))
    for needle in _needles(canary_slide):
        assert needle not in blob


def test_bad_regions(canary_pyramid: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidRegionError):
        SharedRegion(0, 0, 0, 10)
    with pytest.raises(InvalidRegionError, match="outside the slide"):
        derive_shared_pyramid(
            canary_pyramid, tmp_path / "x", pseudonym="P", region=SharedRegion(2000, 0, 500, 10)
        )
    assert not (tmp_path / "x").exists()

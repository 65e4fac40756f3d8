"""The engine on tifffile-free, exactly known slides: stitching, glass, levels, metadata."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import imagecodecs
import numpy as np
import numpy.typing as npt
import pytest
import torch
import zarr
from ome_zarr.io import parse_url
from ome_zarr.reader import Reader
from ome_zarr_models.v05.image_label import ImageLabel
from ome_zarr_models.v05.labels import Labels

from inference._pyramid import SlidePyramid
from inference.engine import Engine, EngineOptions, tissue_mask
from inference.errors import InvalidStoreError, MissingMppError, StoreNotFoundError
from tests.inference.helpers import (
    GLASS,
    PROTOTYPES,
    ColourModel,
    RecordingModel,
    global_reference,
    regions_image,
    spec,
    write_store,
)

Regions = tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]


def _labels(store: Path, name: str = "toy") -> zarr.Group:
    return zarr.open_group(str(store / "labels" / name), mode="r")


def test_pointwise_model_reproduces_the_known_regions(
    regions_store: Path, regions: Regions
) -> None:
    toy = spec()
    with Engine(ColourModel(toy), toy, "cpu", EngineOptions(batch_size=8)) as engine:
        assert engine.lockstep  # the CPU default: nothing runs beside the model
        result = engine.run(regions_store)
    labels = _labels(regions_store)
    expected = regions[1]
    assert result.level == 0 and result.scale == 1.0
    np.testing.assert_array_equal(labels["0"][:], expected)
    # nearest-neighbour reductions: label values are never averaged
    for k in range(1, len(SlidePyramid(regions_store).levels)):
        step = 2**k
        np.testing.assert_array_equal(labels[str(k)][:], expected[::step, ::step])


@pytest.mark.parametrize("schedule", ["lockstep", "threads"])
def test_overlapping_tiles_stitch_without_seams(regions_store: Path, schedule: str) -> None:
    """A model with a 5x5 receptive field, small patches and one-chunk work units: the result
    must equal the model run on the whole image at once, pixel for pixel, whether reading and
    writing run between forward passes (CPU default) or in threads beside them (CUDA)."""
    toy = spec(tile=96, overlap=32)
    model = ColourModel(toy, radius=2)
    options = EngineOptions(batch_size=5, unit_chunks=1, schedule=schedule)
    with Engine(model, toy, "cpu", options) as engine:
        assert engine.lockstep == (schedule == "lockstep")
        engine.run(regions_store)
    mask_ref, probs_ref = global_reference(regions_store, model)
    labels = _labels(regions_store)
    np.testing.assert_array_equal(labels["0"][:], mask_ref)
    probs = labels["probabilities"][:].astype(np.float64)
    assert np.abs(probs - probs_ref).max() <= 1
    # a receptive field wider than the context shows seams: the test can fail
    wide = ColourModel(toy, radius=8)
    with Engine(wide, spec(tile=96, overlap=0, name="wide"), "cpu",
                EngineOptions(unit_chunks=1)) as engine:  # fmt: skip
        engine.run(regions_store)
    wide_ref, _ = global_reference(regions_store, wide)
    assert (_labels(regions_store, "wide")["0"][:] != wide_ref).any()


@pytest.mark.parametrize("slide_mpp", [0.5, 0.3])
def test_the_device_io_path_equals_the_host_path(tmp_path: Path, slide_mpp: float) -> None:
    """The CUDA path's reading (chunks decoded in one batch, pasted into a window on the
    device, never-written chunks white) and reduction (torch's argmax and uint8 cast) run on
    CPU with io="device": labels, probabilities and outlines equal the host path's byte for
    byte, at the model's scale and resampled (0.3 µm/px read at 0.6, scaled by 1.2)."""
    rgb, _ = regions_image(1280, 1024)
    store = write_store(tmp_path / "s.zarr", rgb, mpp=slide_mpp)
    removed = 0
    for chunk in sorted((store / "0" / "c").rglob("*")):  # glass chunks never written
        if chunk.is_file() and imagecodecs.jpeg_decode(chunk.read_bytes()).min() > 240:
            chunk.unlink()
            removed += 1
    assert removed > 0
    toy = spec(tile=96, overlap=32)
    model = ColourModel(toy, radius=2)
    results = {}
    for io in ("host", "device"):
        options = EngineOptions(batch_size=5, unit_chunks=1, io=io)
        with Engine(model, toy, "cpu", options) as engine:
            assert engine.device_io == (io == "device")
            engine.run(store)
        labels = _labels(store)
        results[io] = (
            [labels[key][:] for key in sorted(labels.array_keys())],
            (store / "labels" / "toy.geojson").read_bytes(),
        )
        shutil.rmtree(store / "labels")
    (host, host_outlines), (device, device_outlines) = results["host"], results["device"]
    assert len(host) == len(device) and host_outlines == device_outlines
    for want, got in zip(host, device, strict=True):
        np.testing.assert_array_equal(got, want)
    assert len(json.loads(host_outlines)["features"]) >= 2


@pytest.mark.parametrize("io", ["host", "device"])
def test_an_undecodable_chunk_is_named(tmp_path: Path, regions: Regions, io: str) -> None:
    store = write_store(tmp_path / "s.zarr", regions[0])
    chunk = store / "0" / "c" / "0" / "0" / "1"  # level 0, row 0, column 1: tissue
    chunk.write_bytes(chunk.read_bytes()[:300])  # truncated mid-scan
    toy = spec()
    options = EngineOptions(io=io, skip_glass=False)  # no tissue pass: the model's read hits it
    named = r"s\.zarr: level 0 tile \(1, 0\): "
    with (
        Engine(ColourModel(toy), toy, "cpu", options) as engine,
        pytest.raises(InvalidStoreError, match=named),
    ):
        engine.run(store)


@pytest.mark.parametrize("schedule", ["lockstep", "threads"])
def test_glass_tiles_never_reach_the_model(regions_store: Path, schedule: str) -> None:
    toy = spec()
    model = RecordingModel(toy)
    with Engine(model, toy, "cpu", EngineOptions(batch_size=4, schedule=schedule)) as engine:
        result = engine.run(regions_store)
    assert result.skipped_share > 0.3
    assert result.patches_run == sum(batch.shape[0] for batch in model.seen)
    glass = torch.tensor(GLASS, dtype=torch.float32).view(1, 3, 1, 1)
    for batch in model.seen:
        not_glass = ((batch - glass).abs().amax(dim=1) > 30).flatten(1).any(dim=1)
        assert not_glass.all(), "an all-glass patch was sent to the model"
    probs = _labels(regions_store)["probabilities"]
    assert probs[0, 0:32, 0:32].min() == 255  # skipped glass is certain background


def test_black_fluorescence_background_is_not_tissue() -> None:
    image = np.zeros((200, 200, 3), dtype=np.uint8)
    image[50:100, 60:120] = (10, 20, 180)  # DAPI-like nuclei
    white = np.full((200, 200, 3), 250, dtype=np.uint8)
    mask = tissue_mask(image)
    assert mask[60:90, 70:110].all()
    assert not mask[150:, 150:].any() and mask.mean() < 0.15
    assert not tissue_mask(white).any()


def test_slide_without_mpp_is_refused_unless_given(tmp_path: Path, regions: Regions) -> None:
    store = write_store(tmp_path / "nompp.zarr", regions[0], mpp=None)
    toy = spec()
    with Engine(ColourModel(toy), toy) as engine, pytest.raises(MissingMppError, match="--mpp"):
        engine.run(store)
    options = EngineOptions(mpp_override=0.5)
    with Engine(ColourModel(toy), toy, "cpu", options) as engine:
        result = engine.run(store)
    np.testing.assert_array_equal(_labels(store)["0"][:], regions[1])
    assert result.level == 0


def test_missing_store_is_a_clear_error(tmp_path: Path) -> None:
    toy = spec()
    with Engine(ColourModel(toy), toy) as engine, pytest.raises(StoreNotFoundError):
        engine.run(tmp_path / "absent.zarr")


@pytest.mark.parametrize(("slide_mpp", "level", "scale"), [(0.25, 1, 1.0), (0.3, 1, 1.2)])
def test_level_nearest_the_model_mpp_and_resampling(
    tmp_path: Path, slide_mpp: float, level: int, scale: float
) -> None:
    """The model works at 0.5 µm/px: a 0.25 slide is read at level 1 as is, a 0.3 slide at
    level 1 (0.6 µm/px) resampled by 1.2; the mask matches the regions but at their edges."""
    rgb, mask = regions_image(1920, 1280)
    store = write_store(tmp_path / "s.zarr", rgb, mpp=slide_mpp)
    toy = spec()
    with Engine(ColourModel(toy), toy) as engine:
        result = engine.run(store)
    assert result.level == level and result.scale == pytest.approx(scale)
    labels = _labels(store)
    got = labels[str(level)][:]
    expected = mask[:: 2**level, :: 2**level]
    assert got.shape == expected.shape
    assert (got != expected).mean() < 0.01
    np.testing.assert_array_equal(labels["0"][::2, ::2], got)  # level 0 expands level 1


def test_labels_metadata_marks_ai_output_pending_validation(regions_store: Path) -> None:
    toy = spec()
    with Engine(ColourModel(toy), toy) as engine:
        engine.run(regions_store)
    labels_root = json.loads((regions_store / "labels" / "zarr.json").read_text())
    assert labels_root["attributes"]["ome"]["labels"] == ["toy"]
    attrs = json.loads((regions_store / "labels" / "toy" / "zarr.json").read_text())["attributes"]
    image_label = attrs["ome"]["image-label"]
    assert [c["rgba"][:3] for c in image_label["colors"]] == [[0, 0, 0], [0, 160, 0], [220, 0, 0]]
    assert [p["class"] for p in image_label["properties"]] == ["background", "epithelium", "tumour"]
    datasets = attrs["ome"]["multiscales"][0]["datasets"]
    assert datasets[1]["coordinateTransformations"][0]["scale"] == [1.0, 1.0]
    assert attrs["iain"]["validation"] == "pending" and attrs["iain"]["ai_generated"] is True
    assert attrs["iain"]["status"] == "complete"
    assert not (regions_store / "labels" / "toy" / ".progress").exists()
    probs = _labels(regions_store)["probabilities"]
    assert probs.dtype == np.uint8 and probs.shape == (3, 900, 1200)
    # third-party readers accept it: ome-zarr-models' NGFF 0.5 schema and ome-zarr-py
    label = ImageLabel.from_zarr(_labels(regions_store))
    assert label.attributes.ome.image_label is not None
    assert label.attributes.ome.image_label.colors[2].rgba == (220, 0, 0, 255)
    listing = Labels.from_zarr(zarr.open_group(str(regions_store / "labels"), mode="r"))
    assert listing.attributes.ome.labels == ["toy"]
    location = parse_url(str(regions_store / "labels" / "toy"))
    assert location is not None
    shapes = [[tuple(d.shape) for d in node.data][:2] for node in Reader(location)()]
    assert [(900, 1200), (450, 600)] in shapes  # the label, beside its source image


def test_outlines_are_qupath_geojson_matching_the_regions(regions_store: Path) -> None:
    toy = spec()
    with Engine(ColourModel(toy), toy) as engine:
        result = engine.run(regions_store)
    assert result.geojson == regions_store / "labels" / "toy.geojson"
    collection = json.loads(result.geojson.read_text())
    assert collection["type"] == "FeatureCollection"
    assert collection["properties"]["validation"] == "pending"
    tumours = [
        f for f in collection["features"] if f["properties"]["classification"]["name"] == "tumour"
    ]
    epithelium = [
        f
        for f in collection["features"]
        if f["properties"]["classification"]["name"] == "epithelium"
    ]
    assert len(tumours) == 2 and len(epithelium) == 1
    for feature in collection["features"]:
        assert feature["type"] == "Feature" and feature["geometry"]["type"] == "Polygon"
        assert feature["properties"]["objectType"] == "annotation"
        for ring in feature["geometry"]["coordinates"]:
            assert ring[0] == ring[-1] and len(ring) >= 4
    big = max(tumours, key=lambda f: f["properties"]["measurements"]["Area µm^2"])
    assert big["properties"]["measurements"]["Area µm^2"] == pytest.approx(352 * 192 * 0.25)
    xs = [p[0] for p in big["geometry"]["coordinates"][0]]
    ys = [p[1] for p in big["geometry"]["coordinates"][0]]
    assert (min(xs), max(xs), min(ys), max(ys)) == pytest.approx((304, 656, 144, 336), abs=1)
    # the epithelium band has the tumour square cut out as a hole
    assert len(epithelium[0]["geometry"]["coordinates"]) == 2


@pytest.mark.parametrize("unit_chunks", [2, 3])
def test_label_pyramid_built_per_unit_equals_the_one_built_after(
    tmp_path: Path, unit_chunks: int
) -> None:
    """Levels written as units finish (expansions below the inference level, whole-chunk
    reductions above it) and across a resume equal nearest-neighbour reductions and expansions
    of the finished inference level; background chunks are not stored."""
    rgb, _ = regions_image(1920, 1280)
    # pixel-sized noise of the three colours: an off-by-one in any level changes the result
    noise = np.random.default_rng(0).integers(0, 3, (300, 700))
    rgb[700:1000, 200:900] = np.asarray(PROTOTYPES, dtype=np.uint8)[noise]
    store = write_store(tmp_path / "s.zarr", rgb, tile=64, mpp=0.25)  # model level 1, 6 levels
    toy = spec()
    options = EngineOptions(batch_size=8, unit_chunks=unit_chunks)
    with Engine(ColourModel(toy), toy, "cpu", options) as engine:
        pending = engine.pending_units(store)
        first = engine.run(store, only_units=pending[: len(pending) // 2])
        assert first.geojson is None  # not finished: half the units are left
        second = engine.run(store)
    assert second.units_resumed == len(pending) // 2 and second.level == 1
    labels = _labels(store)
    inference = labels["1"][:]
    assert set(np.unique(inference)) == {0, 1, 2}
    levels = SlidePyramid(store).levels
    for k in range(2, len(levels)):
        step = 2 ** (k - 1)
        np.testing.assert_array_equal(labels[str(k)][:], inference[::step, ::step], f"level {k}")
    expanded = inference.repeat(2, axis=0).repeat(2, axis=1)[: levels[0].height, : levels[0].width]
    np.testing.assert_array_equal(labels["0"][:], expanded)
    # below the inference level a chunk is one inference-level chunk expanded (128 px here);
    # background chunks are not stored, the others are
    level0 = labels["0"]
    assert level0.chunks == (128, 128)
    # probabilities: one chunk (one file) per work unit
    unit = 64 * unit_chunks
    assert labels["probabilities"].chunks == (3, unit, unit)
    files = list((store / "labels" / "toy" / "probabilities" / "c").rglob("*"))
    assert sum(f.is_file() for f in files) == len(pending)
    chunks = store / "labels" / "toy" / "0" / "c"
    for row in range(0, 10):
        for col in range(0, 15):
            block = expanded[row * 128 : (row + 1) * 128, col * 128 : (col + 1) * 128]
            assert (chunks / str(row) / str(col)).is_file() == bool(block.any()), (row, col)


@pytest.mark.parametrize("schedule", ["lockstep", "threads"])
def test_a_failed_unit_write_stops_the_run_and_a_rerun_resumes(
    regions_store: Path, monkeypatch: pytest.MonkeyPatch, schedule: str
) -> None:
    """A disk error in the writer reaches the caller (no hang, no swallowed error); units
    written before it stay marked and the next run resumes after them."""
    import inference._output as output

    real = output.LabelWriter.write_unit
    calls: list[int] = []

    def failing(self: output.LabelWriter, index: int, *args: object, **kwargs: object) -> None:
        calls.append(index)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        real(self, index, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(output.LabelWriter, "write_unit", failing)
    toy = spec()
    options = EngineOptions(batch_size=4, unit_chunks=1, schedule=schedule)
    with Engine(ColourModel(toy), toy, "cpu", options) as engine:
        with pytest.raises(OSError, match="No space left"):
            engine.run(regions_store)
        monkeypatch.setattr(output.LabelWriter, "write_unit", real)
        result = engine.run(regions_store)
    assert result.units_resumed >= 2 and result.geojson is not None
    assert result.units_resumed < result.units_total

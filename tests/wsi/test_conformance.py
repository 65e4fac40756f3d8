"""One conformance suite every (backend, sample slide) pair must pass.

``SlideReaderConformance`` holds the checks; each subclass names a slide, a backend and what the
MANIFEST says about the slide. A backend whose ``can_open`` claims a sample slide must have a
subclass here (``test_every_claimed_slide_is_covered``).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ClassVar

import numpy as np
import pydicom
import pytest
import tifffile
import zarr
from PIL import Image
from pydicom.encaps import generate_frames

import wsi
from wsi import InvalidRegionError, MppSource, SlideReader

SLIDES = [
    "CMU-1-Small-Region.svs",
    "small.svs",
    "boxes.tiff",
    "test3-DAPI-2-(387).ndpi",
    "small_vectra.qptiff",
    "cmu-1-small-region",
    "boxes-dicom",
]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def decode_jpeg(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "JPEG"
        return np.asarray(image.convert("RGB"))


class SlideReaderConformance:
    slide: ClassVar[str]
    backend: ClassVar[str]
    vendor: ClassVar[str]
    level0: ClassVar[tuple[int, int]]
    level_count: ClassVar[int]
    mpp: ClassVar[float | None]
    mpp_source: ClassVar[MppSource]
    objective: ClassVar[float | None] = None
    associated: ClassVar[tuple[tuple[str, int, int], ...]] = ()  # (name, width, height)
    stored_levels: ClassVar[tuple[int, ...]] = ()  # levels expected to expose stored JPEG tiles
    reference_backend: ClassVar[str | None] = None  # another backend to agree with (PSNR >= 40)

    @pytest.fixture(scope="class")
    @classmethod
    def reader(cls, slides_dir: Path) -> Iterator[SlideReader]:
        reader = wsi.open_slide(slides_dir / cls.slide, backend=cls.backend)
        yield reader
        reader.close()

    def reference_region(
        self, slides_dir: Path, location: tuple[int, int], size: tuple[int, int]
    ) -> np.ndarray | None:
        """Level-0 pixels decoded by an independent path, when there is one."""
        if self.reference_backend is None:
            return None
        with wsi.open_slide(slides_dir / self.slide, backend=self.reference_backend) as ref:
            return ref.read_region(location, 0, size)

    def test_backend_claims_the_slide(self, slides_dir: Path, reader: SlideReader) -> None:
        entry = next(e for e in wsi.BACKENDS if e.name == self.backend)
        assert entry.can_open(slides_dir / self.slide)
        assert reader.backend == self.backend
        assert reader.vendor == self.vendor

    def test_levels(self, reader: SlideReader) -> None:
        dims = reader.level_dimensions
        assert dims[0] == self.level0
        assert len(dims) == self.level_count == len(reader.level_downsamples)
        assert reader.level_downsamples[0] == 1.0
        for (w, h), ds in zip(dims, reader.level_downsamples, strict=True):
            assert ds == pytest.approx((self.level0[0] / w + self.level0[1] / h) / 2, rel=1e-6)
        assert list(reader.level_downsamples) == sorted(reader.level_downsamples)

    def test_mpp(self, reader: SlideReader) -> None:
        assert reader.mpp.source is self.mpp_source
        if self.mpp is None:
            assert reader.mpp.x is None and reader.mpp.y is None
        else:
            assert reader.mpp.x == pytest.approx(self.mpp, rel=1e-3)
            assert reader.mpp.y == pytest.approx(self.mpp, rel=1e-3)

    def test_objective(self, reader: SlideReader) -> None:
        assert reader.objective_power == self.objective

    def test_associated_images(self, reader: SlideReader) -> None:
        assert set(reader.associated_images) == {name for name, _, _ in self.associated}
        for name, w, h in self.associated:
            image = reader.read_associated(name)
            assert image.shape == (h, w, 3) and image.dtype == np.uint8
        with pytest.raises(InvalidRegionError):
            reader.read_associated("no-such-image")

    def test_read_region_every_level(self, reader: SlideReader) -> None:
        for level, (w, h) in enumerate(reader.level_dimensions):
            size = (min(w, 100), min(h, 80))
            region = reader.read_region((0, 0), level, size)
            assert region.shape == (size[1], size[0], 3)
            assert region.dtype == np.uint8 and region.flags.c_contiguous

    def test_edge_reads_are_white_outside(self, reader: SlideReader) -> None:
        w, h = reader.level_dimensions[0]
        inside = reader.read_region((w - 10, h - 10), 0, (10, 10))
        region = reader.read_region((w - 10, h - 10), 0, (30, 25))
        assert region.shape == (25, 30, 3)
        np.testing.assert_array_equal(region[:10, :10], inside)
        assert (region[10:] == 255).all() and (region[:, 10:] == 255).all()
        before = reader.read_region((-5, -7), 0, (20, 20))
        assert (before[:7] == 255).all() and (before[:, :5] == 255).all()
        np.testing.assert_array_equal(before[7:, 5:], reader.read_region((0, 0), 0, (15, 13)))
        assert (reader.read_region((w + 100, 0), 0, (8, 8)) == 255).all()

    def test_bad_requests(self, reader: SlideReader) -> None:
        with pytest.raises(InvalidRegionError, match="level"):
            reader.read_region((0, 0), len(reader.level_dimensions), (4, 4))
        with pytest.raises(InvalidRegionError):
            reader.read_region((0, 0), 0, (0, 4))
        with pytest.raises(InvalidRegionError):
            reader.read_region((0, 0), 0, (1 << 15, 1 << 15))

    def test_pixels_agree_with_reference(self, slides_dir: Path, reader: SlideReader) -> None:
        w, h = self.level0
        # the centre (interior tiles) and the bottom-right corner (edge tiles, clipped)
        cw, ch = min(w, 1024), min(h, 1024)
        crops = [
            ((w - cw) // 2, (h - ch) // 2, cw, ch),
            (max(w - 300, 0), max(h - 300, 0), 300, 300),
        ]
        for x, y, cw, ch in crops:
            reference = self.reference_region(slides_dir, (x, y), (cw, ch))
            if reference is None:
                pytest.skip("no second reader decodes this slide")
            pixels = reader.read_region((x, y), 0, (cw, ch))
            assert pixels.shape == reference.shape
            assert psnr(pixels, reference) >= 40, (x, y)

    def test_stored_tiles_equal_pixels(self, reader: SlideReader) -> None:
        levels = tuple(
            level for level in range(len(reader.level_dimensions)) if reader.stored_tiling(level)
        )
        assert levels == self.stored_levels
        for level in levels:
            tiling = reader.stored_tiling(level)
            assert tiling is not None and tiling.compression == "jpeg"
            w, h = reader.level_dimensions[level]
            assert tiling.columns == -(-w // tiling.tile_width)
            assert tiling.rows == -(-h // tiling.tile_height)
            # Level 0 is read tile by tile; a reduced level whole, from (0, 0), because OpenSlide
            # shifts by a fraction of a pixel where a downsample is inexact (2.000337, ...).
            whole = reader.read_region((0, 0), level, (w, h)) if level else None
            for row in range(tiling.rows):
                for col in range(tiling.columns):
                    data = reader.read_stored_tile(level, col, row)
                    tile = decode_jpeg(data)
                    assert tile.shape == (tiling.tile_height, tiling.tile_width, 3)
                    x, y = col * tiling.tile_width, row * tiling.tile_height
                    cw, ch = min(tiling.tile_width, w - x), min(tiling.tile_height, h - y)
                    if whole is None:
                        pixels = reader.read_region((x, y), 0, (cw, ch))
                    else:
                        pixels = whole[y : y + ch, x : x + cw]
                    assert psnr(tile[:ch, :cw], pixels) >= 45, (level, col, row)
            with pytest.raises(InvalidRegionError):
                reader.read_stored_tile(level, tiling.columns, 0)

    def test_concurrent_reads_match_sequential(self, reader: SlideReader) -> None:
        """The tile server reads one handle from many threads."""
        w, h = reader.level_dimensions[0]
        spots = [((i * 131) % max(w - 64, 1), (i * 71) % max(h - 64, 1)) for i in range(24)]
        expected = [reader.read_region(spot, 0, (64, 64)) for spot in spots]
        tiling = reader.stored_tiling(0)
        cells = (
            []
            if tiling is None
            else [(c, r) for r in range(tiling.rows) for c in range(tiling.columns)]
        )
        raw = [reader.read_stored_tile(0, c, r) for c, r in cells]
        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(lambda spot: reader.read_region(spot, 0, (64, 64)), spots * 2))
            got_raw = list(pool.map(lambda cell: reader.read_stored_tile(0, *cell), cells))
        for a, b in zip(got, expected * 2, strict=True):
            np.testing.assert_array_equal(a, b)
        assert got_raw == raw

    def test_describe(self, reader: SlideReader) -> None:
        assert isinstance(reader, SlideReader)  # the runtime-checkable protocol
        info = wsi.describe(reader)
        assert info.level_dimensions == reader.level_dimensions
        assert info.mpp == reader.mpp and info.vendor == self.vendor
        assert info.associated_images == reader.associated_images
        assert len(info.stored_tiling) == self.level_count
        assert info.tile_size[0] > 0 and info.tile_size[1] > 0


SVS_ASSOCIATED = (("label", 387, 463), ("macro", 1280, 431), ("thumbnail", 574, 768))


class _Cmu1Svs(SlideReaderConformance):
    slide = "CMU-1-Small-Region.svs"
    vendor = "aperio"
    level0 = (2220, 2967)
    level_count = 1
    mpp = 0.499
    mpp_source = MppSource.VENDOR
    objective = 20.0
    associated = SVS_ASSOCIATED
    stored_levels = (0,)


class TestCmu1SvsOpenSlide(_Cmu1Svs):
    backend = "openslide"
    reference_backend = "tifffile"


class TestCmu1SvsTifffile(_Cmu1Svs):
    backend = "tifffile"
    reference_backend = "openslide"


class _SmallSvs(SlideReaderConformance):
    slide = "small.svs"
    vendor = "aperio"
    level0 = (16, 16)
    level_count = 1
    mpp = 0.499
    mpp_source = MppSource.VENDOR
    objective = 20.0
    associated = (("thumbnail", 16, 16),)
    stored_levels = (0,)


class TestSmallSvsOpenSlide(_SmallSvs):
    backend = "openslide"
    reference_backend = "tifffile"


class TestSmallSvsTifffile(_SmallSvs):
    backend = "tifffile"
    reference_backend = "openslide"


class _Boxes(SlideReaderConformance):
    slide = "boxes.tiff"
    vendor = "generic-tiff"
    level0 = (300, 250)
    level_count = 4
    mpp = None  # 352.8 µm/px from a 72-dpi tag: rejected as implausible
    mpp_source = MppSource.MISSING

    def test_implausible_mpp_is_explained(self, reader: SlideReader) -> None:
        note = wsi.describe(reader).mpp_note
        assert note is not None and "352.8" in note

    def test_icc_profile(self, reader: SlideReader) -> None:
        icc = reader.icc_profile
        assert icc is not None and len(icc) == 588 and icc[36:40] == b"acsp"


class TestBoxesOpenSlide(_Boxes):
    backend = "openslide"
    reference_backend = "tifffile"


class TestBoxesTifffile(_Boxes):
    backend = "tifffile"
    reference_backend = "openslide"


class TestNdpiOpenSlide(SlideReaderConformance):
    slide = "test3-DAPI-2-(387).ndpi"
    backend = "openslide"
    vendor = "hamamatsu"
    level0 = (3968, 4864)
    level_count = 7
    mpp = 0.22818
    mpp_source = MppSource.VENDOR
    objective = 40.0
    associated = (("macro", 1188, 406),)

    def reference_region(
        self, slides_dir: Path, location: tuple[int, int], size: tuple[int, int]
    ) -> np.ndarray | None:
        (x, y), (w, h) = location, size
        with tifffile.TiffFile(slides_dir / self.slide) as tif:
            level0 = zarr.open_array(tif.series[0].aszarr(level=0), mode="r")
            return np.asarray(level0[y : y + h, x : x + w])


class TestQptiffTifffile(SlideReaderConformance):
    slide = "small_vectra.qptiff"
    backend = "tifffile"
    vendor = "qptiff"
    level0 = (1920, 1440)
    level_count = 1
    mpp = 0.49653
    mpp_source = MppSource.TIFF_RESOLUTION
    objective = 10.0
    associated = (("thumbnail", 480, 360),)

    def reference_region(
        self, slides_dir: Path, location: tuple[int, int], size: tuple[int, int]
    ) -> np.ndarray | None:
        (x, y), (w, h) = location, size
        channels = tifffile.imread(slides_dir / self.slide, series=0)  # (3, H, W) DAPI, Opal...
        return np.moveaxis(np.asarray(channels), 0, -1)[y : y + h, x : x + w]


class TestCmu1DicomOpenSlide(SlideReaderConformance):
    slide = "cmu-1-small-region"
    backend = "openslide"
    vendor = "dicom"
    level0 = (2220, 2967)
    level_count = 12
    mpp = 0.499
    mpp_source = MppSource.VENDOR
    stored_levels = tuple(range(12))

    def reference_region(
        self, slides_dir: Path, location: tuple[int, int], size: tuple[int, int]
    ) -> np.ndarray | None:
        """Level 0 assembled from pydicom's frames, each decoded by PIL (no OpenSlide)."""
        ds = pydicom.dcmread(slides_dir / self.slide / "level-0-frames-0-30.dcm")
        cols = -(-int(ds.TotalPixelMatrixColumns) // int(ds.Columns))
        canvas = np.full((6 * 500, cols * 500, 3), 255, np.uint8)
        frames = generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames))
        for index, frame in enumerate(frames):
            row, col = divmod(index, cols)
            canvas[row * 500 : (row + 1) * 500, col * 500 : (col + 1) * 500] = decode_jpeg(frame)
        (x, y), (w, h) = location, size
        return canvas[y : y + h, x : x + w]

    def test_colours_match_the_svs_it_was_made_from(
        self, slides_dir: Path, reader: SlideReader
    ) -> None:
        # wsi2dcm labels JFIF (YCbCr) frames RGB; read raw, OpenSlide's pixels are YCbCr
        # (PSNR about 10 dB). The series is a second JPEG generation of the SVS: about 29 dB.
        with wsi.open_slide(slides_dir / "CMU-1-Small-Region.svs") as svs:
            expected = svs.read_region((600, 900), 0, (1000, 1000))
        assert psnr(reader.read_region((600, 900), 0, (1000, 1000)), expected) >= 25


class TestBoxesDicomOpenSlide(SlideReaderConformance):
    slide = "boxes-dicom"
    backend = "openslide"
    vendor = "dicom"
    level0 = (16, 16)
    level_count = 1
    mpp = 0.499
    mpp_source = MppSource.VENDOR
    objective = 20.0
    associated = (("thumbnail", 16, 16),)
    stored_levels = (0,)

    def reference_region(
        self, slides_dir: Path, location: tuple[int, int], size: tuple[int, int]
    ) -> np.ndarray | None:
        with wsi.open_slide(slides_dir / "small.svs") as svs:  # the same 16 x 16 crop
            return svs.read_region(location, 0, size)


COVERED = {
    (cls.slide, cls.backend)
    for cls in list(globals().values())
    if isinstance(cls, type)
    and issubclass(cls, SlideReaderConformance)
    and cls.__name__.startswith("Test")
}


@pytest.mark.parametrize("slide", SLIDES)
def test_every_claimed_slide_is_covered(slides_dir: Path, slide: str) -> None:
    claimed = {entry.name for entry in wsi.BACKENDS if entry.can_open(slides_dir / slide)}
    assert claimed, f"no backend claims {slide}"
    covered = {backend for name, backend in COVERED if name == slide}
    assert claimed == covered

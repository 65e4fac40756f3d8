"""Conversion benchmark: IAIN's converter against libvips (pyvips 8.18 dzsave, vips 8.14 CLI).

Makes Aperio-like slides of 0.4 and 1.6 gigapixels with ``../shared/tools/make_big_slide.py``
(cached under ``benchmarks/out/``), then converts each with every tool in the same run, each in
its own process (wall clock, CPU = user + sys and peak RSS from ``wait4``), and prints the
ratios plus the floor: decode every level-0 tile once + encode every reduced tile once at the
libjpeg-turbo rates measured here, spread over the cores.

    python benchmarks/bench_convert.py               # 0.4 and 1.6 GP
    python benchmarks/bench_convert.py --sizes 0.4   # quick
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "benchmarks" / "out"
SHARED = REPO.parent / "shared"
SIDES = {0.4: 20480, 1.6: 40960}  # square slides, as in ../shared/notes/peers-measured.md
SOURCE_REGION = SHARED / "slides" / "cmu-1-small-region" / "level-0-frames-0-30.dcm"

# IAIN through wsi.open_slide when the backends are there, else the tests' tifffile reader
IAIN_RUNNER = """
import sys
from pathlib import Path
from tiling.config import TilingConfig
from tiling.convert import build_pyramid
try:
    from wsi import open_slide
    reader = open_slide(Path(sys.argv[1]))
except ImportError:
    from tests.tiling.readers import TiffJpegReader
    reader = TiffJpegReader(Path(sys.argv[1]))
build_pyramid(reader, sys.argv[2], config=TilingConfig.from_env())
print(type(reader).__name__, file=sys.stderr)
"""

PYVIPS_RUNNER = """
import sys, pyvips
image = pyvips.Image.new_from_file(sys.argv[1], access="sequential")
image.dzsave(sys.argv[2], tile_size=256, overlap=0, suffix=".jpg[Q=85]")
"""


@dataclass(frozen=True)
class Run:
    tool: str
    wall_s: float
    cpu_s: float
    rss_mib: float
    out_mb: float
    ok: bool


def make_slide(gigapixels: float) -> Path:
    side = SIDES[gigapixels]
    path = OUT / f"s{int(gigapixels * 10):02d}.svs"
    if path.exists():
        return path
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".svs.tmp")
    tool = SHARED / "tools" / "make_big_slide.py"
    print(f"making {path.name} ({side}x{side}) ...", flush=True)
    subprocess.run(
        [sys.executable, str(tool), "--source", str(SOURCE_REGION), "--size", f"{side}x{side}",
         "--seed", "1", str(tmp)],
        check=True,
    )  # fmt: skip
    tmp.rename(path)
    return path


def _pixels(slide: Path) -> int:
    import tifffile

    with tifffile.TiffFile(slide) as tif:
        height, width = tif.pages[0].shape[:2]
    return int(width * height)


def tree_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def measure(tool: str, argv: list[str], out: Path) -> Run:
    """Run one conversion in a child process; rusage of that child only."""
    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    for sibling in out.parent.glob(out.name + "*"):
        shutil.rmtree(sibling) if sibling.is_dir() else sibling.unlink()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    produced = out if out.exists() else out.parent / (out.name + "_files")
    size = tree_bytes(produced) if produced.exists() else 0
    dzi = out.parent / (out.name + ".dzi")
    if dzi.exists():
        size += dzi.stat().st_size
    for produced_path in out.parent.glob(out.name + "*"):  # measured: free the disk
        shutil.rmtree(produced_path) if produced_path.is_dir() else produced_path.unlink()
    return Run(
        tool,
        wall,
        usage.ru_utime + usage.ru_stime,
        usage.ru_maxrss / 1024,
        size / 1e6,
        proc.returncode == 0,
    )


def tools(slide: Path, work: Path) -> list[tuple[str, list[str], Path] | tuple[str, None, str]]:
    py = sys.executable
    entries: list[tuple[str, list[str], Path] | tuple[str, None, str]] = [
        ("iain", [py, "-c", IAIN_RUNNER, str(slide), str(work / "iain.zarr")], work / "iain.zarr"),
        # the previous default: reduced levels at Q90 4:4:4 standard tables, not measured
        ("iain_q90", ["env", "TILING_MIN_PSNR=0", py, "-c",
                      IAIN_RUNNER, str(slide), str(work / "iainq90.zarr")], work / "iainq90.zarr"),
    ]  # fmt: skip
    try:
        import pyvips

        version = f"{pyvips.version(0)}.{pyvips.version(1)}"
        entries.append(
            ("pyvips_dz", [py, "-c", PYVIPS_RUNNER, str(slide), str(work / "pydz")], work / "pydz")
        )
        print(f"pyvips: libvips {version}")
    except (ImportError, OSError) as exc:
        entries.append(("pyvips_dz", None, f"skipped: pyvips not importable ({exc})"))
    vips = shutil.which("vips")
    if vips:
        entries.append(
            ("vips_dz", [vips, "dzsave", str(slide), str(work / "dz"), "--tile-size", "256",
                         "--overlap", "0", "--suffix", ".jpg[Q=85]"], work / "dz")
        )  # fmt: skip
        entries.append(
            ("vips_tiff", [vips, "tiffsave", str(slide), str(work / "pyr.tif"), "--tile",
                           "--tile-width", "256", "--tile-height", "256", "--pyramid",
                           "--compression", "jpeg", "--Q", "85", "--bigtiff"], work / "pyr.tif")
        )  # fmt: skip
    else:
        entries.append(("vips_dz", None, "skipped: Debian vips CLI not installed (libvips-tools)"))
        entries.append(("vips_tiff", None, "skipped: Debian vips CLI not installed"))
    return entries


def floor_seconds(slide: Path, cores: int) -> tuple[float, int, int, float, float]:
    """(floor wall s, level-0 tiles, reduced tiles, decode/s, encode/s) at libjpeg-turbo rates."""
    sys.path.insert(0, str(REPO))
    import numpy as np

    from tests.tiling.readers import TiffJpegReader
    from tiling.codec import decode_jpeg, encode_jpeg_flat
    from tiling.layout import PyramidSpec

    reader = TiffJpegReader(slide)
    try:
        width, height = reader.level_dimensions[0]
        tw, th = reader.tile_size
        spec = PyramidSpec(width, height, tw, th)
        cols, rows = spec.grid(0)
        sample = [
            reader.read_stored_tile(0, (i * 7919) % cols, (i * 104729) % rows) for i in range(300)
        ]
    finally:
        reader.close()
    start = time.process_time()
    pixels = [decode_jpeg(data) for data in sample]
    decode_rate = len(sample) / (time.process_time() - start)
    start = time.process_time()
    for tile in pixels:
        encode_jpeg_flat(np.ascontiguousarray(tile), 16.0)  # IAIN's reduced levels: flat tables
    encode_rate = len(pixels) / (time.process_time() - start)
    level0 = cols * rows
    reduced = sum(math.prod(spec.grid(k)) for k in range(1, spec.level_count))
    return (
        (level0 / decode_rate + reduced / encode_rate) / cores,
        level0,
        reduced,
        decode_rate,
        encode_rate,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[0.4, 1.6], choices=[0.4, 1.6])
    parser.add_argument("--repeat", type=int, default=1, help="runs per tool (median)")
    parser.add_argument("--only", nargs="*", help="tools to run (default: all)")
    parser.add_argument(
        "--slide", type=Path, action="append", help="bench this slide instead of --sizes"
    )
    args = parser.parse_args(argv)
    cores = len(os.sched_getaffinity(0))
    print(f"machine: {cores} cores, load average {os.getloadavg()[0]:.1f} at start")
    slides = args.slide or [make_slide(gigapixels) for gigapixels in args.sizes]
    for slide in slides:
        gigapixels = round(_pixels(slide) / 1e9, 2)
        with slide.open("rb") as handle:  # warm the page cache, as for every tool
            while handle.read(1 << 24):
                pass
        source_mb = slide.stat().st_size / 1e6
        work = OUT / f"work-{slide.stem}"
        work.mkdir(parents=True, exist_ok=True)
        floor, n0, nr, dec, enc = floor_seconds(slide, cores)
        print(f"\n== {gigapixels} GP: {slide.name}, {source_mb:.1f} MB; floor {floor:.2f} s "
              f"({n0} L0 decodes at {dec:.0f}/s + {nr} encodes at {enc:.0f}/s per core, "
              f"{cores} cores)")  # fmt: skip
        runs: dict[str, list[Run]] = {}
        for _ in range(args.repeat):
            for tool, argv_, out in tools(slide, work):
                if args.only and tool not in args.only:
                    continue
                if argv_ is None:
                    print(f"{tool}: {out}")
                    continue
                assert isinstance(out, Path)
                run = measure(tool, argv_, out)
                runs.setdefault(tool, []).append(run)
                print(f"  {tool:10s} wall {run.wall_s:7.2f} s  cpu {run.cpu_s:7.2f} s  "
                      f"rss {run.rss_mib:6.0f} MiB  out {run.out_mb:7.1f} MB"
                      f"{'' if run.ok else '  FAILED'}", flush=True)  # fmt: skip
        iain_wall = statistics.median(
            r.wall_s for r in runs.get("iain", []) or [Run("", 0, 0, 0, 0, 0)]
        )
        print(f"\n| tool | wall s | CPU s | peak RSS MiB | output MB | out/source | "
              f"{'peer wall / IAIN wall'} |")  # fmt: skip
        print("|---|---|---|---|---|---|---|")
        for tool, results in runs.items():
            wall = statistics.median(r.wall_s for r in results)
            cpu = statistics.median(r.cpu_s for r in results)
            rss = max(r.rss_mib for r in results)
            out_mb = results[-1].out_mb
            ratio = wall / iain_wall if iain_wall else float("nan")
            print(f"| {tool} | {wall:.2f} | {cpu:.2f} | {rss:.0f} | {out_mb:.1f} | "
                  f"{out_mb / source_mb:.2f} | {ratio:.2f}x |")  # fmt: skip
        print(f"| floor | {floor:.2f} | {floor * cores:.2f} | - | - | - | "
              f"{floor / iain_wall if iain_wall else float('nan'):.2f}x |")  # fmt: skip
        print(f"load average at end: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

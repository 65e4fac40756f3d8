"""Slide-reader throughput: open time, raw stored-tile reads, decoded 256 px reads, per backend.

    python -m benchmarks.bench_wsi [SLIDE ...]   (default: the sample CMU-1-Small-Region.svs)

Make a large realistic slide first with ``../shared/tools/make_big_slide.py`` for figures that
mean something; the stored-tile rate is what the tile server and the level-0 copy depend on.
Prints the median of 3 passes per figure.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import wsi

DEFAULT = (
    Path(__file__).resolve().parents[1].parent / "shared" / "slides" / "CMU-1-Small-Region.svs"
)


def _median_rate(passes: int, count: int, run: Callable[[], object]) -> float:
    rates = []
    for _ in range(passes):
        started = time.perf_counter()
        run()
        rates.append(count / (time.perf_counter() - started))
    return statistics.median(rates)


def _stored(reader: wsi.SlideReader, cells: list[tuple[int, int]]) -> None:
    for col, row in cells:
        reader.read_stored_tile(0, col, row)


def _decoded(reader: wsi.SlideReader, spots: list[tuple[int, int]]) -> None:
    for x, y in spots:
        reader.read_region((x, y), 0, (256, 256))


def bench(path: Path) -> None:
    import zarr  # noqa: F401 - imported lazily by the tifffile backend; keep it out of open time

    for entry in wsi.BACKENDS:
        if not (entry.default and entry.can_open(path)):
            continue
        started = time.perf_counter()
        reader = wsi.open_slide(path, backend=entry.name)
        open_ms = (time.perf_counter() - started) * 1e3
        with reader:
            line = f"{path.name:<28} {entry.name:<9} open {open_ms:7.1f} ms"
            tiling = reader.stored_tiling(0)
            if tiling is not None:
                cells = [(c, r) for r in range(tiling.rows) for c in range(tiling.columns)]
                size = sum(len(reader.read_stored_tile(0, c, r)) for c, r in cells)
                rate = _median_rate(3, len(cells), partial(_stored, reader, cells))
                line += (
                    f" | stored tiles {rate:9,.0f}/s ({rate * size / len(cells) / 1e6:6.0f} MB/s)"
                )
            w, h = reader.level_dimensions[0]
            spots = [((i * 997) % max(w - 256, 1), (i * 1531) % max(h - 256, 1)) for i in range(60)]
            rate = _median_rate(3, len(spots), partial(_decoded, reader, spots))
            line += f" | read_region 256 px {rate:7,.0f}/s"
            print(line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("slides", nargs="*", type=Path, default=[DEFAULT])
    for path in parser.parse_args(argv).slides:
        bench(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

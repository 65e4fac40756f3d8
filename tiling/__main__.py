"""``python -m tiling convert SLIDE OUT [...]`` (also ``iain convert``): one slide -> one pyramid.

Exit status 0 on success, 2 with one line on stderr on any error (never a traceback).
Progress: a bar with rate and ETA on a terminal (plain ANSI, no dependency), JSON lines on stdout
with ``--json-progress``, nothing with ``--quiet``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path
from typing import TextIO

from tiling.config import DEFAULT_MIN_PSNR, TilingConfig
from tiling.convert import Progress, ProgressCallback, build_pyramid
from tiling.errors import TilingError
from wsi.errors import SlideError
from wsi.reader import Mpp, MppSource, SlideReader

__all__ = ["main"]

logger = logging.getLogger(__name__)


def _open_slide(path: str) -> SlideReader:
    """The wsi package's ``open_slide`` (looked up at run time: backends are optional here)."""
    wsi = importlib.import_module("wsi")
    opener = getattr(wsi, "open_slide", None)
    if opener is None:
        raise TilingError("no slide backends available (wsi.open_slide is missing)")
    reader: SlideReader = opener(Path(path))
    return reader


def _format_seconds(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60:d}:{seconds % 60:02d}"


def _bar(stream: TextIO) -> ProgressCallback:
    def show(event: Progress) -> None:
        fraction = event.done / event.total if event.total else 1.0
        rate = event.done / event.elapsed_s if event.elapsed_s > 0 else 0.0
        eta = (event.total - event.done) / rate if rate > 0 else 0.0
        filled = int(30 * fraction)
        line = (
            f"\r[{'#' * filled}{'.' * (30 - filled)}] {100 * fraction:5.1f}% "
            f"{event.done}/{event.total} tiles  {rate:7.0f} tiles/s  "
            f"elapsed {_format_seconds(event.elapsed_s)}  ETA {_format_seconds(eta)}"
        )
        stream.write(line + ("\n" if event.phase == "published" else ""))
        stream.flush()

    return show


def _json_lines(stream: TextIO) -> ProgressCallback:
    def emit(event: Progress) -> None:
        record = {
            "event": event.phase,
            "done": event.done,
            "total": event.total,
            "skipped": event.skipped,
            "elapsed_s": round(event.elapsed_s, 3),
        }
        stream.write(json.dumps(record) + "\n")
        stream.flush()

    return emit


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iain convert", description="slide -> OME-Zarr pyramid")
    parser.add_argument("slide", help="slide file (any format wsi opens)")
    parser.add_argument("out", help="output directory (SLIDE.zarr) or s3://bucket/prefix")
    parser.add_argument("--mpp", type=float, help="override microns per pixel (x = y)")
    parser.add_argument(
        "--min-psnr",
        type=float,
        metavar="DB",
        help="floor for every reduced level's PSNR against the 2x area average of level 0 it "
        "encodes, measured on every tile; reduced levels use flat-table JPEG at the coarsest "
        f"step per level that keeps it (default {DEFAULT_MIN_PSNR:g}; 0: use --quality and "
        "--subsampling)",
    )
    parser.add_argument(
        "--quality", type=int, help="JPEG quality of a re-encoded level 0 (1..100; default 90)"
    )
    parser.add_argument("--subsampling", choices=("420", "422", "444"), help="its JPEG chroma")
    parser.add_argument("--tile-size", type=int, help="tile size when level 0 is re-encoded")
    parser.add_argument("--workers", type=int, help="threads (default: one per core)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.add_argument("--json-progress", action="store_true", help="JSON lines on stdout")
    parser.add_argument("--verbose", action="store_true", help="log progress and warnings")
    return parser


def _convert(args: argparse.Namespace) -> int:
    config = TilingConfig.from_env()
    config = replace(
        config,
        quality=config.quality if args.quality is None else args.quality,
        subsampling=config.subsampling if args.subsampling is None else args.subsampling,
        tile_size=config.tile_size if args.tile_size is None else args.tile_size,
        workers=config.workers if args.workers is None else args.workers,
        min_psnr=config.min_psnr if args.min_psnr is None else args.min_psnr,
    )
    if args.mpp is not None and not 0 < args.mpp < 1000:
        raise ValueError(f"--mpp {args.mpp} is not a plausible microns-per-pixel value")
    mpp = Mpp(args.mpp, args.mpp, MppSource.OVERRIDE) if args.mpp else None
    progress: ProgressCallback | None = None
    if args.json_progress:
        progress = _json_lines(sys.stdout)
    elif not args.quiet and sys.stderr.isatty():
        progress = _bar(sys.stderr)
    reader = _open_slide(args.slide)
    try:
        spec = build_pyramid(
            reader, args.out, config=config, progress=progress, overwrite=args.overwrite, mpp=mpp
        )
    finally:
        reader.close()
    if not args.quiet and not args.json_progress:
        print(f"{args.out}: {spec.width}x{spec.height}, {spec.level_count} levels")
    return 0


def _where(slide: str, exc: BaseException) -> str:
    """The slide's path as a prefix, unless the message already names the file."""
    return "" if Path(slide).name in str(exc) else f"{slide}: "


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``argv`` starts with the subcommand name (``convert``)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list or args_list[0] != "convert":
        print("usage: python -m tiling convert SLIDE OUT [options]", file=sys.stderr)
        return 2
    args = _parser().parse_args(args_list[1:])
    # errors end as ONE line on stderr: library warnings only with --verbose
    level = logging.INFO if args.verbose else logging.CRITICAL
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return _convert(args)
    except (TilingError, SlideError) as exc:
        print(f"iain convert: {_where(args.slide, exc)}{exc} [{exc.code}]", file=sys.stderr)
    except (OSError, ValueError) as exc:
        print(f"iain convert: {_where(args.slide, exc)}{exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print("iain convert: interrupted (re-run the same command to resume)", file=sys.stderr)
        return 130
    return 2


if __name__ == "__main__":
    raise SystemExit(main())

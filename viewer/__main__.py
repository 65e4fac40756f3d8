"""``iain serve`` and ``iain demo``: argparse, then one call.

``serve --host H --port P --data DIR|s3://bucket/prefix [--workers N]`` serves every
``*.zarr`` pyramid under DATA. ``demo --slides DIR --data DIR`` first converts every slide
of DIR that :func:`wsi.open_slide` accepts into ``DATA/<stem>.zarr`` (skipping those
already there, reporting failures one line each), then serves on 127.0.0.1:8000.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from viewer.config import ServerSettings
from viewer.errors import ViewerError

__all__ = ["main"]

logger = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iain")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve converted slides")
    serve.add_argument("--host", help="default 127.0.0.1 (IAIN_HOST)")
    serve.add_argument("--port", type=int, help="default 8000 (IAIN_PORT)")
    serve.add_argument("--data", required=True, help="directory or s3:// URL of *.zarr pyramids")
    serve.add_argument("--workers", type=int, help="worker processes, default 1 (IAIN_WORKERS)")
    serve.add_argument("--cache-dir", help="disk cache of computed tiles (IAIN_CACHE_DIR)")
    demo = commands.add_parser("demo", help="convert the sample slides and serve them")
    demo.add_argument("--slides", required=True, type=Path)
    demo.add_argument("--data", required=True, type=Path)
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument("--no-serve", action="store_true", help="convert only (tests)")
    return parser


def _converter() -> Callable[[Path, Path], Any]:
    """``tiling.convert.convert_slide(source, destination)`` (the tiling package's converter)."""
    module = importlib.import_module("tiling.convert")
    convert: Callable[[Path, Path], Any] = module.convert_slide
    return convert


def convert_all(slides: Path, data: Path) -> tuple[list[str], list[str]]:
    """Convert every readable slide of ``slides`` into ``data``; (converted, failed) names."""
    wsi = importlib.import_module("wsi")
    convert = _converter()
    data.mkdir(parents=True, exist_ok=True)
    converted: list[str] = []
    failed: list[str] = []
    for source in sorted(slides.iterdir()):
        if source.name.startswith(".") or source.name.lower().endswith((".md", ".txt")):
            continue
        target = data / f"{source.stem}.zarr"
        if target.exists():
            continue
        try:
            wsi.open_slide(source).close()
            convert(source, target)
        except Exception as exc:  # report and go on: one bad slide must not stop the demo
            code = getattr(exc, "code", type(exc).__name__)
            print(f"skipped {source.name}: {code}: {str(exc)[:200]}", file=sys.stderr)
            failed.append(source.name)
            continue
        print(f"converted {source.name}")
        converted.append(source.name)
    return converted, failed


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from viewer.serve import run_server

    try:
        if args.command == "serve":
            given = {
                "data": args.data,
                "host": args.host,
                "port": args.port,
                "workers": args.workers,
                "cache_dir": args.cache_dir,
            }
            settings = ServerSettings.from_env(os.environ).with_(
                **{k: v for k, v in given.items() if v is not None}
            )
            print(f"IAIN serving {settings.data} at http://{settings.host}:{settings.port}/")
            run_server(settings)
            return 0
        if not args.slides.is_dir():
            print(f"iain demo: error: {args.slides} is not a directory", file=sys.stderr)
            return 2
        convert_all(args.slides, args.data)
        if args.no_serve:
            return 0
        settings = ServerSettings.from_env(os.environ).with_(
            data=str(args.data), host="127.0.0.1", port=args.port
        )
        print(f"IAIN demo: open http://127.0.0.1:{settings.port}/", flush=True)
        run_server(settings)
    except ViewerError as exc:
        print(f"iain {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        print(f"iain {args.command}: error: {exc.name} is not available yet", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``iain infer`` and ``iain predict``: argparse, then one call into the engine.

``iain infer STORE.zarr... --model NAME [--device cpu|cuda] [--mpp X] [--batch N]
[--schedule auto|lockstep|threads]`` writes
``STORE.zarr/labels/NAME/`` and ``STORE.zarr/labels/NAME.geojson``; a killed run resumes.
``iain predict --model NAME --out DIR IMAGE.png...`` writes ``DIR/<stem>.png`` class indices.
Errors are one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from inference.errors import InferenceError
from inference.plan import SCHEDULES

__all__ = ["main"]

logger = logging.getLogger(__name__)


def _parser(command: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"iain {command}")
    parser.add_argument("--model", required=True, help="registry name, or package.module:factory")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N")
    parser.add_argument("--batch", type=int, default=16, help="patches per forward pass")
    if command == "infer":
        parser.add_argument("stores", nargs="+", type=Path, metavar="STORE.zarr")
        parser.add_argument("--mpp", type=float, default=None,
                            help="µm/px of level 0 when the slide does not say")  # fmt: skip
        parser.add_argument("--unit-chunks", type=int, default=4,
                            help="output chunks per work-unit side (resume unit)")  # fmt: skip
        parser.add_argument("--keep-glass", action="store_true",
                            help="run the model on glass too (no tissue detection)")  # fmt: skip
        parser.add_argument("--schedule", choices=SCHEDULES, default="auto",
                            help="auto (default): lockstep on CPU, threads on CUDA")  # fmt: skip
    else:
        parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
        parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


class _Bar:
    """A one-line progress bar on stderr: units, tiles/s, ETA."""

    def __init__(self, name: str, enabled: bool) -> None:
        self.name, self.enabled, self.last = name, enabled, 0.0

    def __call__(self, p: object) -> None:
        from inference.engine import Progress

        assert isinstance(p, Progress)
        now = time.monotonic()
        final = p.units_done == p.units_total
        if not self.enabled or (now - self.last < 0.5 and not final):
            return
        self.last = now
        rate = p.patches_per_s
        remaining = p.units_total - p.units_done
        done_here = max(1, p.units_done)
        eta = p.elapsed_s / done_here * remaining if p.units_done else float("nan")
        width = 24
        filled = int(width * p.units_done / max(1, p.units_total))
        eta_text = "--:--" if eta != eta else f"{int(eta) // 60:d}:{int(eta) % 60:02d}"
        sys.stderr.write(
            f"\r{self.name} [{'#' * filled}{'.' * (width - filled)}] {p.units_done}/"
            f"{p.units_total} units  {p.patches_run} tiles  {rate:.1f} tiles/s  ETA {eta_text} "
        )
        if final:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _infer(args: argparse.Namespace) -> int:
    from inference.engine import Engine, EngineOptions, resolve_device
    from inference.spec import load_named_model

    options = EngineOptions(
        batch_size=args.batch,
        mpp_override=args.mpp,
        unit_chunks=args.unit_chunks,
        skip_glass=not args.keep_glass,
        schedule=args.schedule,
    )
    device = resolve_device(args.device)
    spec, model = load_named_model(args.model, device)
    with Engine(model, spec, device, options) as engine:
        schedule = "lockstep" if engine.lockstep else "threads"  # what "auto" chose
        for store in args.stores:
            result = engine.run(store, progress=_Bar(store.name, not args.quiet))
            if result.already_complete:
                print(f"{store.name}: labels {result.labels_dir} already complete")
                continue
            print(
                f"{store.name}: labels {result.labels_dir} outlines {result.geojson} "
                f"({result.features} polygons); {result.patches_run} tiles run, "
                f"{100 * result.skipped_share:.1f} % glass skipped, "
                f"{result.units_resumed}/{result.units_total} units resumed, "
                f"{result.seconds:.1f} s ({schedule} schedule)"
            )
    return 0


def _predict(args: argparse.Namespace) -> int:
    from inference.engine import Engine, EngineOptions, resolve_device
    from inference.predict import predict_files
    from inference.spec import load_named_model

    device = resolve_device(args.device)
    spec, model = load_named_model(args.model, device)
    with Engine(model, spec, device, EngineOptions(batch_size=args.batch)) as engine:
        for path in predict_files(engine, args.images, args.out):
            print(path)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``main(["infer", ...])`` / ``main(["predict", ...])``; returns the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list or args_list[0] not in ("infer", "predict"):
        print("usage: python -m inference {infer,predict} ...", file=sys.stderr)
        return 2
    command = args_list[0]
    args = _parser(command).parse_args(args_list[1:])
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return _infer(args) if command == "infer" else _predict(args)
    except InferenceError as exc:
        print(f"iain {command}: error: {exc} ({exc.code})", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"iain {command}: interrupted; run again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())

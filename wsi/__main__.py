"""``iain info SLIDE [--json] [--mpp X] [--backend NAME]``: everything a reader knows about a slide.

On a :class:`SlideError` it prints one line, ``iain info: <path>: <message>``, and exits 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict
from typing import Any

from . import backend_names, describe, open_slide
from .errors import SlideError
from .reader import SlideInfo, SlideReader

__all__ = ["main"]

logger = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iain info", description="Describe a whole-slide image.")
    parser.add_argument("slide", help="slide file, or a DICOM series directory")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--mpp", type=float, help="override microns per pixel (both axes)")
    parser.add_argument("--backend", choices=backend_names(), help="force a reader backend")
    parser.add_argument("--properties", action="store_true", help="also list vendor properties")
    parser.add_argument(
        "--verify", action="store_true", help="decode every tile of every level, not just a probe"
    )
    return parser


def info_dict(info: SlideInfo) -> dict[str, Any]:
    """SlideInfo as plain JSON-able data."""
    data = asdict(info)
    data["mpp"] = {"x": info.mpp.x, "y": info.mpp.y, "source": info.mpp.source.value}
    data["properties"] = dict(info.properties)
    return data


def _text(info: SlideInfo, with_properties: bool) -> str:
    mpp = info.mpp
    mpp_text = f"{mpp.x:.5g} x {mpp.y:.5g} µm/px ({mpp.source.value})" if mpp.known else "missing"
    if info.mpp_note:
        mpp_text += f" [{info.mpp_note}]"
    objective = f"{info.objective_power:g}x" if info.objective_power else "unknown"
    lines = [
        f"file:        {info.path}",
        f"backend:     {info.backend}",
        f"vendor:      {info.vendor}",
        f"mpp:         {mpp_text}",
        f"objective:   {objective}",
        f"tile size:   {info.tile_size[0]} x {info.tile_size[1]}",
        f"icc profile: {info.icc_profile_bytes} bytes"
        if info.icc_profile_bytes
        else "icc profile: none",
        f"associated:  {', '.join(info.associated_images) or 'none'}",
        f"levels:      {len(info.level_dimensions)}",
    ]
    for level, ((w, h), ds) in enumerate(
        zip(info.level_dimensions, info.level_downsamples, strict=True)
    ):
        stored = info.stored_tiling[level]
        how = (
            f"stored {stored.compression} tiles {stored.tile_width}x{stored.tile_height}, "
            f"{stored.columns}x{stored.rows}"
            if stored
            else "no stored tiles to copy"
        )
        lines.append(f"  {level:>2}: {w} x {h}  downsample {ds:.4g}  {how}")
    if with_properties:
        lines.append("properties:")
        lines += [f"  {k} = {v!r}" for k, v in sorted(info.properties.items())]
    return "\n".join(lines)


def probe(reader: SlideReader, *, full: bool = False) -> None:
    """Decode a few regions (level 0's centre and corners, the smallest level whole).

    Opening reads only headers; a slide whose tiles do not decode must still fail ``info``.
    With ``full`` every tile-sized region of every level is decoded.
    """
    tw, th = reader.tile_size
    for level, (w, h) in enumerate(reader.level_dimensions):
        ds = reader.level_downsamples[level]
        if full:
            spots = [(x, y) for y in range(0, h, th) for x in range(0, w, tw)]
        elif level == 0:
            spots = [(0, 0), (max(w - tw, 0), max(h - th, 0)), (w // 2 - tw // 2, h // 2 - th // 2)]
        elif level == len(reader.level_dimensions) - 1 and w * h <= 4096 * 4096:
            reader.read_region((0, 0), level, (w, h))
            continue
        else:
            continue
        for x, y in spots:
            reader.read_region((round(x * ds), round(y * ds)), level, (tw, th))


def _message(path: str, exc: SlideError) -> str:
    """``<path>: <message>`` without repeating the file name the message starts with."""
    text = str(exc)
    name = path.rstrip("/").rsplit("/", 1)[-1]
    return text[len(name) + 2 :] if text.startswith(f"{name}: ") else text


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``argv`` starts with the subcommand name (``info``)."""
    args_in = list(sys.argv[1:] if argv is None else argv)
    if args_in and args_in[0] == "info":
        args_in = args_in[1:]
    args = _parser().parse_args(args_in)
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    try:
        reader = open_slide(args.slide, mpp_override=args.mpp, backend=args.backend)
        try:
            info = describe(reader)
            probe(reader, full=args.verify)
        finally:
            reader.close()
    except SlideError as exc:
        print(f"iain info: {args.slide}: {_message(args.slide, exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # a library failure we did not foresee: still one line, exit 2
        logger.debug("unexpected error", exc_info=True)
        print(f"iain info: {args.slide}: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(info_dict(info), indent=2, ensure_ascii=False))
    else:
        print(_text(info, args.properties))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Converter settings (prefix ``TILING_``); frozen, read from the environment only on demand."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from tiling.codec import DEFAULT_QUALITY, DEFAULT_SUBSAMPLING, SUBSAMPLINGS

__all__ = ["DEFAULT_MIN_PSNR", "TilingConfig"]

# the floor for reduced levels is 35 dB against an area average of level 0; the
# converter measures against its own reduced pixels, whose level 1 comes from libjpeg's
# scaled IDCT (46-52 dB from the exact average on H&E): 0.5 dB of headroom covers that
DEFAULT_MIN_PSNR = 35.5


_N = TypeVar("_N", int, float)


def _number(environ: Mapping[str, str], name: str, default: _N, kind: type[_N]) -> _N:
    """``environ[name]`` as ``kind`` (int or float); ``default`` when unset or empty."""
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return kind(raw)
    except ValueError as exc:
        what = "an integer" if kind is int else "a number"
        raise ValueError(f"{name}={raw!r} is not {what}") from exc


@dataclass(frozen=True, slots=True)
class TilingConfig:
    """How pyramids are built.

    ``tile_size`` applies only when level 0 is re-encoded; copied levels keep the stored tile size.
    ``quality`` / ``subsampling`` (420/422/444) encode a re-encoded level 0 (and reduced levels
    when ``min_psnr`` is 0).
    ``optimize_huffman`` trades ~0.4 ms per encoded tile for ~7 % smaller tiles.
    ``process_min_tiles``: from this many level-0 tiles on, column bands are built in
    ``workers`` processes (no shared GIL) instead of threads.
    ``workers`` threads run JPEG work (libjpeg-turbo releases the GIL); 0 means one per core.
    ``min_psnr``: reduced levels use flat JPEG quantisation at the coarsest step per level whose
    PSNR, measured on every encoded tile against the exact area-averaged pixels, is at least
    this (dB); 0 turns it off: reduced levels then use ``quality`` / ``subsampling`` as level 0.
    ``s3_options`` go to s3fs (endpoint_url, key, secret, ...) for ``s3://`` outputs.
    """

    quality: int = DEFAULT_QUALITY
    subsampling: str = DEFAULT_SUBSAMPLING
    optimize_huffman: bool = True
    tile_size: int = 256
    workers: int = 0
    process_min_tiles: int = 2048
    min_psnr: float = DEFAULT_MIN_PSNR
    s3_options: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 1 <= self.quality <= 100:
            raise ValueError(f"quality {self.quality} not in 1..100")
        if self.subsampling not in SUBSAMPLINGS:
            raise ValueError(f"subsampling {self.subsampling!r} not in {SUBSAMPLINGS}")
        if self.tile_size < 16 or self.tile_size > 4096 or self.tile_size % 16:
            raise ValueError(f"tile size {self.tile_size} must be a multiple of 16 in 16..4096")
        if not (self.min_psnr == 0 or 20 <= self.min_psnr <= 60):
            raise ValueError(f"min PSNR {self.min_psnr} dB must be 0 (off) or in 20..60")
        if self.workers < 0:
            raise ValueError(f"workers {self.workers} must be >= 0")

    @property
    def worker_count(self) -> int:
        return self.workers or max(1, len(os.sched_getaffinity(0)))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TilingConfig:
        env = os.environ if environ is None else environ
        s3: dict[str, str] = {}
        if env.get("TILING_S3_ENDPOINT_URL"):
            s3["endpoint_url"] = env["TILING_S3_ENDPOINT_URL"]
        return cls(
            quality=_number(env, "TILING_QUALITY", DEFAULT_QUALITY, int),
            subsampling=env.get("TILING_SUBSAMPLING") or DEFAULT_SUBSAMPLING,
            optimize_huffman=env.get("TILING_OPTIMIZE_HUFFMAN", "1") not in ("0", "false"),
            tile_size=_number(env, "TILING_TILE_SIZE", 256, int),
            workers=_number(env, "TILING_WORKERS", 0, int),
            process_min_tiles=_number(env, "TILING_PROCESS_MIN_TILES", 2048, int),
            min_psnr=_number(env, "TILING_MIN_PSNR", DEFAULT_MIN_PSNR, float),
            s3_options=s3,
        )

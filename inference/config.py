"""Inference settings (prefix ``INFERENCE_``); frozen, read from the environment only on demand.

``INFERENCE_JOBS_DIR``   job records shared by every server process (default ``data/jobs``)
``INFERENCE_DEVICES``    comma-separated devices, one job worker each (``cuda:0,cuda:1``; default
                         ``cpu``; empty: this process runs no worker, it only answers the API)
``INFERENCE_BATCH``      patches per forward pass (16)
``INFERENCE_UNIT_CHUNKS`` output chunks per work-unit side (4): resume and memory granularity
``INFERENCE_SCHEDULE``   ``auto`` (lockstep on CPU, threads on CUDA), ``lockstep`` or ``threads``
``INFERENCE_STALE_S``    a running job whose record is older than this is re-queued (600)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from inference.engine import EngineOptions
from inference.errors import InvalidRequestError
from inference.plan import SCHEDULES

__all__ = ["InferenceSettings"]


def _int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise InvalidRequestError(f"{name}={raw!r} is not an integer") from exc


def _schedule(environ: Mapping[str, str]) -> str:
    raw = environ.get("INFERENCE_SCHEDULE") or "auto"
    if raw not in SCHEDULES:
        choices = ", ".join(SCHEDULES)
        raise InvalidRequestError(f"INFERENCE_SCHEDULE={raw!r} is not one of {choices}")
    return raw


@dataclass(frozen=True, slots=True)
class InferenceSettings:
    """Where jobs live, which devices run them, and the engine's options."""

    jobs_dir: Path = Path("data/jobs")
    devices: tuple[str, ...] = ("cpu",)
    batch_size: int = 16
    unit_chunks: int = 4
    schedule: str = "auto"
    stale_after_s: int = 600

    def engine_options(self) -> EngineOptions:
        return EngineOptions(
            batch_size=self.batch_size, unit_chunks=self.unit_chunks, schedule=self.schedule
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> InferenceSettings:
        env = os.environ if environ is None else environ
        devices = env.get("INFERENCE_DEVICES")
        return cls(
            jobs_dir=Path(env.get("INFERENCE_JOBS_DIR") or "data/jobs"),
            devices=("cpu",) if devices is None else tuple(d for d in devices.split(",") if d),
            batch_size=_int(env, "INFERENCE_BATCH", 16),
            unit_chunks=_int(env, "INFERENCE_UNIT_CHUNKS", 4),
            schedule=_schedule(env),
            stale_after_s=_int(env, "INFERENCE_STALE_S", 600),
        )

"""The same pipeline spread over a dask.distributed cluster: one slide, or one region, per task.

Each worker process loads a model once (a per-process cache keyed by name and device) and runs
:class:`~inference.engine.Engine` on what it is given. Region tasks write disjoint chunk-aligned
work units of one label group, created beforehand by a prepare task; a last task per slide
builds the mask pyramid and the outlines once its region tasks are finished. ``LocalCluster`` in
tests; in production one worker process per GPU (``--nthreads 1``, ``CUDA_VISIBLE_DEVICES``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from distributed import Client, Future

from inference.engine import Engine, EngineOptions, RunResult, resolve_device
from inference.errors import InvalidRequestError
from inference.spec import load_named_model

__all__ = ["infer_distributed"]

logger = logging.getLogger(__name__)

_ENGINES: dict[tuple[str, str, EngineOptions, int], Engine] = {}
_LOCK = threading.Lock()


def _engine(model: str, device: str, options: EngineOptions) -> Engine:
    """This worker thread's engine for ``model``: the model loads once per thread. An Engine
    reuses its batch, accumulator and decode buffers between units, so it is not shared by
    threads (a worker with several threads, or ``LocalCluster(processes=False)``, ran two
    regions on one engine and mixed their buffers)."""
    key = (model, device, options, threading.get_ident())
    with _LOCK:
        if key not in _ENGINES:
            torch_device = resolve_device(device)
            spec, module = load_named_model(model, torch_device)
            _ENGINES[key] = Engine(module, spec, torch_device, options)
        return _ENGINES[key]


def _summary(store: Path, result: RunResult) -> dict[str, Any]:
    return {
        "store": str(store),
        "labels": str(result.labels_dir),
        "geojson": str(result.geojson) if result.geojson else None,
        "units_total": result.units_total,
        "patches_run": result.patches_run,
        "patches_skipped": result.patches_skipped,
        "seconds": result.seconds,
    }


def _run_slide(store: str, model: str, device: str, options: EngineOptions) -> dict[str, Any]:
    return _summary(Path(store), _engine(model, device, options).run(Path(store)))


def _pending(store: str, model: str, device: str, options: EngineOptions) -> list[int]:
    return _engine(model, device, options).pending_units(Path(store))


def _run_region(
    store: str, model: str, device: str, options: EngineOptions, units: list[int]
) -> dict[str, Any]:
    engine = _engine(model, device, options)
    result = engine.run(Path(store), only_units=units, finish=False)
    return _summary(Path(store), result)


def _finish(
    store: str, model: str, device: str, options: EngineOptions, regions: list[dict[str, Any]]
) -> dict[str, Any]:
    """Runs after every region of the slide (``regions`` are their results)."""
    engine = _engine(model, device, options)
    result = engine.run(Path(store), only_units=[], finish=True)
    summary = _summary(Path(store), result)
    summary["patches_run"] = sum(r["patches_run"] for r in regions)
    summary["patches_skipped"] = sum(r["patches_skipped"] for r in regions)
    summary["regions"] = len(regions)
    return summary


def infer_distributed(
    client: Client,
    stores: Sequence[Path],
    model: str,
    device: str = "cpu",
    options: EngineOptions | None = None,
    regions_per_slide: int = 1,
) -> list[dict[str, Any]]:
    """Segment ``stores`` on the cluster; returns one summary per slide, in order.

    ``regions_per_slide > 1`` splits each slide's pending work units into that many tasks.
    """
    if regions_per_slide < 1:
        raise InvalidRequestError(f"regions_per_slide {regions_per_slide} must be >= 1")
    opts = options or EngineOptions()
    futures: list[Future[dict[str, Any]]] = []
    for store in stores:
        path = str(Path(store).resolve())
        if regions_per_slide == 1:
            futures.append(client.submit(_run_slide, path, model, device, opts, pure=False))
            continue
        pending: list[int] = client.submit(_pending, path, model, device, opts, pure=False).result()
        groups = [pending[i::regions_per_slide] for i in range(regions_per_slide)]
        regions = [
            client.submit(_run_region, path, model, device, opts, group, pure=False)
            for group in groups
            if group
        ]
        futures.append(client.submit(_finish, path, model, device, opts, regions, pure=False))
    results: list[dict[str, Any]] = client.gather(futures)  # type: ignore[no-untyped-call]
    logger.info("distributed inference: %d slides done", len(results))
    return results

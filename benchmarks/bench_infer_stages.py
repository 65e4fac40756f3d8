"""Where the inference pipeline's CPU goes: thread CPU time of each stage, per patch.

One full ``Engine.run`` of a converted slide with the shipped model, each stage wrapped with
``time.thread_time`` (the thread's own CPU, whichever thread runs it), beside a bare forward
pass of the same model and batch measured just before. On a shared 2-core machine the
end-to-end ratio swings with other jobs; per-stage CPU changes far less, so this is how a change
around the model is compared: run it against each checkout
(``PYTHONPATH=<checkout> python benchmarks/bench_infer_stages.py``).

Usage: python benchmarks/bench_infer_stages.py [--store /tmp/iain-bench/bench20000.zarr]
       [--model crc-tumour] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

if not os.environ.get("PYTHONPATH"):  # otherwise: the checkout named there
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import inference._output as output_module
import inference.engine as engine_module
import inference.outlines as outlines_module
from benchmarks.bench_infer import bench_bare
from inference._memory import pin_mmap_threshold
from inference.engine import Engine, EngineOptions
from inference.spec import load_named_model

_lock = threading.Lock()
cpu_s: dict[str, float] = {}
wall_s: dict[str, float] = {}


def _timed(label: str, func: Callable[..., Any], wall: bool = False) -> Callable[..., Any]:
    def timed(*args: Any, **kwargs: Any) -> Any:
        cpu, started = time.thread_time(), time.perf_counter()
        try:
            return func(*args, **kwargs)
        finally:
            with _lock:
                cpu_s[label] = cpu_s.get(label, 0.0) + time.thread_time() - cpu
                if wall:
                    wall_s[label] = wall_s.get(label, 0.0) + time.perf_counter() - started

    return timed


def _instrument_modules() -> None:
    """Stages reached through module or class attributes (every engine of the process)."""
    writer = output_module.LabelWriter
    writer.write_unit = _timed("writer: LabelWriter.write_unit", writer.write_unit, wall=True)  # type: ignore[method-assign]
    writer._write_probabilities = _timed(  # type: ignore[method-assign]
        "decode pool: probabilities", writer._write_probabilities, wall=True
    )
    writer.finish = _timed("end: LabelWriter.finish", writer.finish, wall=True)  # type: ignore[method-assign]
    engine_module.decode_jpeg = _timed("reader: JPEG decode", engine_module.decode_jpeg)
    engine_module.argmax_first = _timed("writer: argmax", engine_module.argmax_first)
    tracer = getattr(outlines_module, "RowTracer", None)  # absent before outlines per band
    if tracer is not None:
        tracer.advance = _timed("tracer: outlines per band", tracer.advance, wall=True)


def _instrument(engine: Engine) -> None:
    e: Any = engine
    e.model = _timed("main: model call", e.model, wall=True)
    e._forward = _timed("main: _forward (model incl.)", e._forward, wall=True)
    e._start_unit = _timed("main: _start_unit", e._start_unit)
    e._finish_unit = _timed("writer: _finish_unit (write_unit incl.)", e._finish_unit, wall=True)
    e._read_window = _timed("reader: _read_window (decodes excl.)", e._read_window)
    e.write_outlines = _timed("end: write_outlines", e.write_outlines, wall=True)
    e._tissue = _timed("start: tissue mask", e._tissue, wall=True)


def store_arguments(description: str) -> argparse.Namespace:
    """--store (a converted slide), --model, --batch, --repeat: the stage and host benchmarks'."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--store", type=Path, default=Path("/tmp/iain-bench/bench20000.zarr"))
    parser.add_argument("--model", default="crc-tumour")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    if not (args.store / "zarr.json").exists():
        raise SystemExit(f"{args.store}: not a converted slide (run bench_infer.py --size 20000)")
    return args


def main() -> int:
    args = store_arguments(__doc__.splitlines()[0])
    pin_mmap_threshold()
    spec, model = load_named_model(args.model, torch.device("cpu"))
    _instrument_modules()
    bench_bare(model, torch.device("cpu"), args.batch, 2.0)  # warm-up, discarded
    for _ in range(args.repeat):
        rate, _ = bench_bare(model, torch.device("cpu"), args.batch, 4.0)
        cpu_s.clear()
        wall_s.clear()
        shutil.rmtree(args.store / "labels", ignore_errors=True)
        engine = Engine(model, spec, "cpu", EngineOptions(batch_size=args.batch))
        _instrument(engine)
        started, cpu = time.perf_counter(), time.process_time()
        result = engine.run(args.store)
        seconds, cpu_total = time.perf_counter() - started, time.process_time() - cpu
        engine.close()
        n = result.patches_run
        report = {
            "load": os.getloadavg(),
            "bare_patches_per_s": round(rate, 1),
            "pipeline_patches_per_s": round(n / seconds, 1),
            "ratio": round(n / seconds / rate, 3),
            "seconds": round(seconds, 2),
            "model_call_patches_per_s": round(n / wall_s["main: model call"], 1),
            "process_cpu_ms_per_patch": round(1000 * cpu_total / n, 2),
            "cpu_ms_per_patch": {
                k: round(1000 * v / n, 3) for k, v in sorted(cpu_s.items(), key=lambda i: -i[1])
            },
            "wall_s": {k: round(v, 2) for k, v in sorted(wall_s.items(), key=lambda i: -i[1])},
        }
        print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

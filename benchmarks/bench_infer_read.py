"""The inference pipeline's reading side alone: chunk reads and decodes per unit, CPU per patch.

Runs the engine's producer (tissue mask, chunk reads, libjpeg-turbo decodes, window assembly)
over every unit of a converted slide with no model, and counts the JPEG decodes. Process CPU
time is far less sensitive to other jobs on a shared machine than the pipeline / bare ratio,
so this is how a change to the reader is compared: run it against each checkout
(``PYTHONPATH=<checkout> python benchmarks/bench_infer_read.py``).

Usage: python benchmarks/bench_infer_read.py [--store /tmp/iain-bench/bench20000.zarr]
       [--model crc-tumour] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

if not os.environ.get("PYTHONPATH"):  # otherwise: the checkout named there
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import inference.engine as engine_module
from inference._pyramid import SlidePyramid
from inference.engine import Engine, EngineOptions, make_plan
from inference.spec import load_named_model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=Path("/tmp/iain-bench/bench20000.zarr"))
    parser.add_argument("--model", default="crc-tumour")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    spec, _ = load_named_model(args.model, torch.device("cpu"))
    decodes = [0]
    real_decode = getattr(engine_module, "decode_jpeg")  # noqa: B009

    def counting(data: bytes) -> Any:
        decodes[0] += 1
        return real_decode(data)

    setattr(engine_module, "decode_jpeg", counting)  # noqa: B010
    runs = []
    for _ in range(args.repeat):
        with Engine(nn.Identity(), spec, "cpu", EngineOptions()) as engine:
            pyramid = SlidePyramid(args.store)
            plan = make_plan(pyramid, spec, engine.options)
            tissue, tissue_scale = engine._tissue(pyramid, plan)
            decodes[0] = 0
            units = plan.units()
            start, cpu = time.perf_counter(), time.process_time()
            windows = patches = 0
            for work in engine._produce(pyramid, plan, units, tissue, tissue_scale):
                windows += work.window is not None
                patches += len(work.patches)
            runs.append(
                {
                    "cpu_s": time.process_time() - cpu,
                    "wall_s": time.perf_counter() - start,
                    "patches": patches,
                    "windows": windows,
                    "decodes": decodes[0],
                }
            )
    cpu_s = statistics.median(r["cpu_s"] for r in runs)
    last = runs[-1]
    report = {
        "store": args.store.name,
        "units": len(units),
        "windows_read": last["windows"],
        "patches": last["patches"],
        "chunks_decoded": last["decodes"],
        "decodes_per_window": round(last["decodes"] / max(1, last["windows"]), 2),
        "cpu_s_runs": [round(r["cpu_s"], 2) for r in runs],
        "wall_s_runs": [round(r["wall_s"], 2) for r in runs],
        "cpu_ms_per_patch": round(1000 * cpu_s / max(1, last["patches"]), 3),
        "load_average": os.getloadavg()[0],
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

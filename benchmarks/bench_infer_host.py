"""The pipeline's ceiling on this host: ``Engine.run`` with a model that costs nothing.

Why: pipeline / bare tells how much the work around the model costs *on this machine with this
model*. On a GPU the model gets far faster while the host-side work per patch (blending, argmax,
LZ4, files, outlines) stays on the CPU, so the question becomes how many patches per second the
host can take at all. Here the shipped model runs once over the slide and its logits are
recorded per patch; the pipeline then runs again with a model that looks them up (a sample of
each input is the key). The rest of the pipeline does exactly the work of a real run, down to
the same outlines, which the script checks.

Usage: python benchmarks/bench_infer_host.py [--store /tmp/iain-bench/bench20000.zarr]
       [--model crc-tumour] [--batch 16] [--repeat 2]
(the store is a converted slide, e.g. the one ``bench_infer.py --size 20000`` makes)
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_infer_stages import store_arguments
from inference._memory import pin_mmap_threshold
from inference.engine import Engine, EngineOptions
from inference.spec import ModelSpec, load_named_model


def _key(patch: Tensor) -> bytes:
    """A sparse sample of one normalised input patch: unique per patch of a real slide."""
    return patch[:, ::29, ::31].contiguous().cpu().numpy().tobytes()


class Recorder(nn.Module):
    """The real model, keeping each patch's logits."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.logits: dict[bytes, Tensor] = {}

    def forward(self, x: Tensor) -> Tensor:
        y: Tensor = self.net(x)
        for patch, out in zip(x, y, strict=True):
            self.logits[_key(patch)] = out.clone()
        return y


class Replay(nn.Module):
    """The recorded logits, looked up: a model that costs (almost) nothing."""

    def __init__(self, logits: dict[bytes, Tensor]) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([self.logits[_key(patch)] for patch in x])


def _run(
    model: nn.Module, spec: ModelSpec, store: Path, options: EngineOptions
) -> tuple[float, float, bytes]:
    """(patches/s, CPU seconds, the outlines written)."""
    shutil.rmtree(store / "labels", ignore_errors=True)
    started, cpu = time.perf_counter(), time.process_time()
    with Engine(model, spec, "cpu", options) as engine:
        result = engine.run(store)
    seconds = time.perf_counter() - started
    outlines = (store / "labels" / f"{spec.name}.geojson").read_bytes()
    return result.patches_run / seconds, time.process_time() - cpu, outlines


def main() -> int:
    args = store_arguments(__doc__.splitlines()[0])
    pin_mmap_threshold()
    spec, net = load_named_model(args.model, torch.device("cpu"))
    assert isinstance(net, nn.Module)
    recorder = Recorder(net).eval()
    real, _, reference = _run(recorder, spec, args.store, EngineOptions(batch_size=args.batch))
    replay = Replay(recorder.logits).eval()
    report: dict[str, object] = {
        "load": os.getloadavg(),
        "torch_threads": torch.get_num_threads(),
        "patches": len(recorder.logits),
        "real_model_lockstep_patches_per_s": round(real, 1),
    }
    for schedule in ("lockstep", "threads"):
        runs = []
        for _ in range(args.repeat):
            options = EngineOptions(batch_size=args.batch, schedule=schedule)
            rate, cpu_s, outlines = _run(replay, spec, args.store, options)
            if outlines != reference:
                raise SystemExit("the replayed run wrote other outlines: the replay is broken")
            runs.append({"patches_per_s": round(rate, 1), "cpu_s": round(cpu_s, 2)})
        report[f"free_model_{schedule}"] = runs
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Inference throughput: bare forward pass vs the IAIN pipeline vs a naive openslide loop.

One run prints, for the same model, device and batch:

* ``bare``: the forward pass alone on random tensors already on the device;
* ``pipeline``: ``inference.Engine.run`` on a converted slide (tissue detection, chunk reads,
  libjpeg-turbo decode in threads, blending, label pyramid, GeoJSON), end to end;
* ``naive``: openslide ``read_region`` per tile -> numpy -> model, one tile at a time.

Patches/s, Mpixel/s (model input pixels), the ratios, peak RSS (and GPU memory on CUDA).
The slide is made with ``../shared/tools/make_big_slide.py`` and converted with ``iain convert``
into ``--workdir`` (never into the repository) the first time.

Usage: python benchmarks/bench_infer.py [--size 10240] [--device cpu] [--batch 16] [--repeat 3]
       python benchmarks/bench_infer.py --size 40000 --pipeline-only   (peak RSS of one run)

Bare and pipeline runs alternate (``--repeat``) and each pair's ratio is printed too: on a shared
machine the load moves both alike within a pair. glibc's mmap threshold is pinned before the
first bare run, as the engine does, so every phase runs under the same allocator.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from inference._memory import pin_mmap_threshold  # noqa: E402
from inference.engine import Engine, EngineOptions, make_plan  # noqa: E402
from inference.plan import IO_PATHS, SCHEDULES  # noqa: E402
from inference.spec import ModelSpec, load_named_model  # noqa: E402

SHARED = REPO.parent / "shared"
SOURCE = SHARED / "slides" / "cmu-1-small-region" / "level-0-frames-0-30.dcm"


class BenchNet(nn.Module):
    """A small encoder-decoder (about 0.5 GMAC per 256 px patch, fp32), standing in for the
    trained model: the pipeline only sees ``Callable[[Tensor], Tensor]``."""

    def __init__(self, classes: int = 3, width: int = 32) -> None:
        super().__init__()

        def block(cin: int, cout: int, stride: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            )

        self.encoder = nn.Sequential(
            block(3, width, 2),
            block(width, 2 * width, 2),
            block(2 * width, 4 * width, 2),
            block(4 * width, 4 * width, 1),
            block(4 * width, 4 * width, 1),
        )
        self.head = nn.Conv2d(4 * width, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        return nn.functional.interpolate(self.head(self.encoder(x)), size=size, mode="bilinear")


SPEC = ModelSpec(
    name="bench",
    version="0",
    classes=("background", "epithelium", "tumour"),
    colors=((0, 0, 0), (0, 160, 0), (220, 0, 0)),
    mpp=1.0,
    tile_size_px=256,
    overlap_px=32,
)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_slide(workdir: Path, size: int) -> Path:
    """``make_big_slide.py`` then ``iain convert``; cached in ``workdir``."""
    svs = workdir / f"bench{size}.svs"
    store = workdir / f"bench{size}.zarr"
    if not svs.exists():
        subprocess.run(
            [sys.executable, str(SHARED / "tools" / "make_big_slide.py"), "--source", str(SOURCE),
             "--size", f"{size}x{size}", "--quality", "85", "--seed", "3", str(svs)],
            check=True,
        )  # fmt: skip
    if not store.exists():
        from viewer.cli import main as iain

        if iain(["convert", str(svs), str(store)]) != 0:
            raise SystemExit("conversion failed")
    return store


def bench_bare(
    model: nn.Module, device: torch.device, batch: int, seconds: float
) -> tuple[float, float]:
    """Patches/s of the forward pass alone (random input already on the device), and process
    CPU milliseconds per patch. The model runs as the engine runs it: channels_last (and
    float16 autocast on CUDA), batch norms folded by ``load_model``."""
    x = torch.randn(batch, 3, SPEC.tile_size_px, SPEC.tile_size_px, device=device)
    model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    x = x.contiguous(memory_format=torch.channels_last)

    def forward() -> None:
        with (
            torch.autocast("cuda", dtype=torch.float16) if device.type == "cuda" else nullcontext()
        ):
            model(x)

    with torch.inference_mode():
        for _ in range(2):
            forward()
        sync(device)
        done, start, cpu = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - start < seconds:
            forward()
            done += batch
        sync(device)
        return done / (time.perf_counter() - start), 1000 * (time.process_time() - cpu) / done


def bench_pipeline(
    model: nn.Module,
    device: torch.device,
    store: Path,
    batch: int,
    background_io: bool = True,
    schedule: str = "auto",
    io: str = "auto",
) -> dict[str, float]:
    shutil.rmtree(store / "labels", ignore_errors=True)
    options = EngineOptions(batch_size=batch, background_io=background_io, schedule=schedule, io=io)
    engine = Engine(model, SPEC, device, options)
    forward = engine.forward_probs
    in_model = [0.0, 0.0]  # wall seconds, process CPU seconds

    def timed(inputs: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        # shares of wall and CPU time spent in the model: the pipeline's efficiency measured
        # inside the same run, so a busy machine's noise mostly cancels out
        started, cpu = time.perf_counter(), time.process_time()
        out = forward(inputs, out=out)
        sync(device)
        in_model[0] += time.perf_counter() - started
        in_model[1] += time.process_time() - cpu
        return out

    engine.forward_probs = timed  # type: ignore[method-assign]
    sync(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    result = engine.run(store)
    sync(device)
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start
    engine.close()
    return {
        "seconds": seconds,
        "patches": result.patches_run,
        "skipped_share": result.skipped_share,
        "patches_per_s": result.patches_run / seconds,
        "model_share": in_model[0] / seconds,
        "model_cpu_share": in_model[1] / cpu_seconds,
        "cpu_ms_per_patch": 1000 * cpu_seconds / max(1, result.patches_run),
        "level": result.level,
    }


def bench_naive(
    model: nn.Module, device: torch.device, svs: Path, store: Path, limit: int
) -> dict[str, float]:
    """openslide read_region per tile (level 0, then halved to the model's 1 µm/px), to numpy,
    normalise, model, one tile at a time; the same tissue positions the pipeline ran."""
    import openslide
    from PIL import Image

    from inference._pyramid import SlidePyramid

    pyramid = SlidePyramid(store)
    plan = make_plan(pyramid, SPEC, EngineOptions())
    engine = Engine(model, SPEC, device)
    tissue, tissue_scale = engine._tissue(pyramid, plan)
    stride = plan.stride
    positions = [
        (i * stride - plan.halo, j * stride - plan.halo)
        for j in range(plan.model_h // stride)
        for i in range(plan.model_w // stride)
        if engine._has_tissue(tissue, tissue_scale, plan, i * stride, j * stride,
                              (i + 1) * stride, (j + 1) * stride)
    ][:limit]  # fmt: skip
    engine.close()
    slide = openslide.OpenSlide(str(svs))
    factor = pyramid.downsample(plan.level) / plan.scale  # level-0 px per model px
    mean = torch.tensor(SPEC.mean, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(SPEC.std, device=device).view(1, 3, 1, 1) * 255
    size = SPEC.tile_size_px
    sync(device)
    start = time.perf_counter()
    with torch.inference_mode():
        for x, y in positions:
            read = round(size * factor)
            region = slide.read_region((round(x * factor), round(y * factor)), 0, (read, read))
            resized = region.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
            rgb = np.array(resized)
            tensor = torch.from_numpy(rgb).permute(2, 0, 1)[None].to(device).float()
            logits = model((tensor - mean) / std)
            logits.argmax(dim=1).cpu()
    sync(device)
    seconds = time.perf_counter() - start
    slide.close()
    return {
        "seconds": seconds,
        "patches": len(positions),
        "patches_per_s": len(positions) / seconds,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10240, help="slide side in pixels")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3, help="pipeline runs (median)")
    parser.add_argument("--naive-tiles", type=int, default=96)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/iain-bench"))
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--pipeline-only", action="store_true",
        help="one pipeline run, no bare or naive phase: the process's peak RSS is the pipeline's",
    )  # fmt: skip
    parser.add_argument(
        "--foreground-io", action="store_true",
        help="threads schedule: reader, decoders and writer at normal priority",
    )  # fmt: skip
    parser.add_argument(
        "--schedule", choices=SCHEDULES, default="auto",
        help="lockstep: read and write between forward passes (CPU default); threads: beside them",
    )  # fmt: skip
    parser.add_argument(
        "--io", choices=IO_PATHS, default="auto",
        help="host: libjpeg-turbo threads and numpy (CPU default); device: decode (nvJPEG on "
        "CUDA) and reduce on the device",
    )  # fmt: skip
    parser.add_argument(
        "--model", default=None, help="a registered model (e.g. crc-tumour); default BenchNet"
    )
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    pin_mmap_threshold()
    device = torch.device(args.device)
    torch.manual_seed(0)
    global SPEC
    model: Any
    if args.model:  # the shipped weights and their card (patch size, mpp, normalisation)
        SPEC, model = load_named_model(args.model, device)
    else:
        model = BenchNet().to(device).eval()
    store = make_slide(args.workdir, args.size)
    svs = args.workdir / f"bench{args.size}.svs"
    background = not args.foreground_io

    if args.pipeline_only:
        rss_before = peak_rss_mib()
        run = bench_pipeline(model, device, store, args.batch, background, args.schedule, args.io)
        only = {
            "slide_px": args.size,
            "pipeline_patches_per_s": round(run["patches_per_s"], 2),
            "pipeline_seconds": round(run["seconds"], 2),
            "pipeline_patches": run["patches"],
            "glass_skipped_share": round(run["skipped_share"], 3),
            "peak_rss_mib_before_pipeline": round(rss_before, 1),
            "peak_rss_mib": round(peak_rss_mib(), 1),
        }
        print(json.dumps(only))
        return 0

    bench_bare(model, device, args.batch, seconds=2.0)  # discarded: a process's first seconds
    # of forward passes run 2-4x slower here (first-touch pages, oneDNN kernels), skewing pair 1
    bare_runs, bare_cpu, pipe_runs = [], [], []
    for _ in range(args.repeat):  # interleaved: a busy machine slows both alike
        rate, cpu_ms = bench_bare(model, device, args.batch, seconds=4.0)
        bare_runs.append(rate)
        bare_cpu.append(cpu_ms)
        pipe_runs.append(
            bench_pipeline(model, device, store, args.batch, background, args.schedule, args.io)
        )
    rss_pipeline = peak_rss_mib()
    gpu_mib = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    naive = bench_naive(model, device, svs, store, args.naive_tiles)
    bare = statistics.median(bare_runs)
    pipe = statistics.median(r["patches_per_s"] for r in pipe_runs)
    mpx = SPEC.tile_size_px**2 / 1e6
    report = {
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "batch": args.batch,
        "slide_px": args.size,
        "tile": SPEC.tile_size_px,
        "bare_patches_per_s": round(bare, 2),
        "bare_runs": [round(b, 2) for b in bare_runs],
        "pipeline_patches_per_s": round(pipe, 2),
        "pipeline_runs": [round(r["patches_per_s"], 2) for r in pipe_runs],
        "pipeline_seconds": [round(r["seconds"], 2) for r in pipe_runs],
        "pipeline_model_share": [round(r["model_share"], 3) for r in pipe_runs],
        "pipeline_model_cpu_share": [round(r["model_cpu_share"], 3) for r in pipe_runs],
        "pipeline_patches": pipe_runs[0]["patches"],
        "glass_skipped_share": round(pipe_runs[0]["skipped_share"], 3),
        "naive_patches_per_s": round(naive["patches_per_s"], 2),
        "naive_patches": naive["patches"],
        "ratio_pipeline_vs_bare": round(pipe / bare, 3),
        "ratio_per_pair": [
            round(r["patches_per_s"] / b, 3) for r, b in zip(pipe_runs, bare_runs, strict=True)
        ],
        "background_io": background,
        "schedule": args.schedule,
        "io": args.io,
        # CPU time per patch, whole process (the pipeline's threads included): less sensitive
        # to other jobs on the machine than wall-clock rates
        "bare_cpu_ms_per_patch": [round(c, 2) for c in bare_cpu],
        "pipeline_cpu_ms_per_patch": [round(r["cpu_ms_per_patch"], 2) for r in pipe_runs],
        "ratio_pipeline_vs_naive": round(pipe / naive["patches_per_s"], 3),
        "ratio_naive_vs_bare": round(naive["patches_per_s"] / bare, 3),
        "peak_rss_mib_after_pipeline": round(rss_pipeline, 1),
        "peak_gpu_mib": round(gpu_mib, 1) if gpu_mib is not None else None,
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(f"device {device}, {torch.get_num_threads()} threads, batch {args.batch}, "
              f"{args.size}x{args.size} slide, {pipe_runs[0]['patches']} tissue patches "
              f"({100 * report['glass_skipped_share']:.1f} % glass skipped)")  # fmt: skip
        for name, rate in (("bare forward", bare), ("pipeline", pipe),
                           ("naive openslide", naive["patches_per_s"])):  # fmt: skip
            print(f"  {name:16s} {rate:8.2f} patches/s  {rate * mpx:8.2f} Mpx/s")
        print(f"  pipeline / bare  {report['ratio_pipeline_vs_bare']:.3f} "
              f"(per bare/pipeline pair {report['ratio_per_pair']}) "
              f"(in the model: wall {report['pipeline_model_share']}, "
              f"CPU {report['pipeline_model_cpu_share']})")  # fmt: skip
        print(f"  CPU ms per patch: bare {report['bare_cpu_ms_per_patch']}, "
              f"pipeline {report['pipeline_cpu_ms_per_patch']}")  # fmt: skip
        print(f"  pipeline / naive {report['ratio_pipeline_vs_naive']:.3f}")
        print(f"  naive / bare     {report['ratio_naive_vs_bare']:.3f}")
        print(f"  peak RSS after pipeline {rss_pipeline:.0f} MiB; GPU {gpu_mib}")
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

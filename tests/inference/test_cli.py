"""``iain infer`` / ``iain predict`` as users run them: real subprocesses for the kill test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import torch
import zarr
from PIL import Image

from inference.__main__ import main
from tests.inference.helpers import colour_factory, global_reference, regions_image, write_store

REPO = Path(__file__).resolve().parents[2]
TOY = "tests.inference.helpers:colour_factory"
SLOW = "tests.inference.helpers:slow_factory"
Regions = tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "inference", *args]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO)
    env["OMP_NUM_THREADS"] = "1"
    return env


def test_kill_9_mid_run_then_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rgb, _ = regions_image(1280, 1024)
    store = write_store(tmp_path / "kill.zarr", rgb)
    progress = store / "labels" / "toy" / ".progress"
    args = _cli("infer", str(store), "--model", SLOW, "--unit-chunks", "1", "--batch", "2")
    proc = subprocess.Popen([*args, "--quiet"], env=_env(), cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(list(progress.glob("*"))) < 3:
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    done_before = len(list(progress.glob("*")))
    assert 3 <= done_before < 20  # 5 x 4 units: killed midway

    assert main(["infer", str(store), "--model", TOY, "--unit-chunks", "1", "--quiet"]) == 0
    assert f"{done_before}/20 units resumed" in capsys.readouterr().out
    assert not progress.exists()
    # the finished labels equal the model run on the whole image at once
    _, model = colour_factory(torch.device("cpu"))
    want, _ = global_reference(store, model)  # type: ignore[arg-type]
    np.testing.assert_array_equal(zarr.open_array(str(store / "labels/toy/0"), mode="r")[:], want)


def test_infer_without_mpp_exits_2_with_one_line(
    tmp_path: Path, regions: Regions, capsys: pytest.CaptureFixture[str]
) -> None:
    store = write_store(tmp_path / "nompp.zarr", regions[0], mpp=None)
    assert main(["infer", str(store), "--model", TOY, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "missing_mpp" in err and "--mpp" in err
    assert main(["infer", str(store), "--model", TOY, "--mpp", "0.5", "--quiet"]) == 0
    assert (store / "labels" / "toy.geojson").exists()
    capsys.readouterr()
    assert main(["infer", str(store), "--model", TOY, "--mpp", "0.5", "--quiet"]) == 0
    assert "already complete" in capsys.readouterr().out  # a finished slide is not redone


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["infer", "{tmp}/absent.zarr", "--model", TOY], "store_not_found"),
        (["infer", "{tmp}", "--model", TOY], "invalid_store"),
        (["infer", "{tmp}", "--model", "no.such.module:factory"], "model_not_found"),
        (["infer", "{tmp}", "--model", TOY, "--batch", "0"], "invalid_request"),
        (["infer", "{tmp}", "--model", TOY, "--device", "cuda:7"], "device_unavailable"),
        (["predict", "--model", TOY, "--out", "{tmp}/o", "{tmp}/x.png"], "invalid_image"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, args: list[str], code: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "x.png").write_bytes(b"not a png")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "cuda" in argv[-1] and __import__("torch").cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and code in err and "Traceback" not in err


def test_predict_writes_class_index_pngs(tmp_path: Path) -> None:
    rgb, mask = regions_image(720, 560)
    small = np.full((40, 50, 3), 255, dtype=np.uint8)
    small[8:24, 16:40] = (200, 40, 40)
    Image.fromarray(rgb).save(tmp_path / "big.png")
    Image.fromarray(small).save(tmp_path / "small.png")
    out = tmp_path / "out"
    argv = ["predict", "--model", TOY, "--out", str(out)]
    assert main([*argv, str(tmp_path / "big.png"), str(tmp_path / "small.png")]) == 0
    big = np.asarray(Image.open(out / "big.png"))
    assert big.shape == mask.shape and big.dtype == np.uint8
    # the toy model blurs 5x5: only pixels within 2 px of a region edge may differ
    assert (big != mask).mean() < 0.01 and set(np.unique(big)) == {0, 1, 2}
    tiny = np.asarray(Image.open(out / "small.png"))
    assert tiny.shape == (40, 50) and (tiny[10:22, 18:38] == 2).all() and tiny[0, 0] == 0


def test_infer_reports_the_schedule_it_ran(
    tmp_path: Path, regions: Regions, capsys: pytest.CaptureFixture[str]
) -> None:
    for schedule, said in (("auto", "lockstep"), ("threads", "threads")):  # auto: CPU -> lockstep
        store = write_store(tmp_path / f"{schedule}.zarr", regions[0])
        assert main(["infer", str(store), "--model", TOY, "--schedule", schedule, "--quiet"]) == 0
        assert f"({said} schedule)" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # argparse: exit 2 naming the choices
        main(["infer", str(store), "--model", TOY, "--schedule", "fast"])
    assert "invalid choice: 'fast'" in capsys.readouterr().err


def test_iain_dispatcher_reaches_infer(tmp_path: Path, regions: Regions) -> None:
    from viewer.cli import main as iain

    store = write_store(tmp_path / "d.zarr", regions[0])
    assert iain(["infer", str(store), "--model", TOY, "--quiet"]) == 0
    assert (store / "labels" / "toy" / "0" / "zarr.json").exists()

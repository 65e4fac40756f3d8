"""A one-epoch training run on a handful of real images: writes a loadable, reproducible model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.__main__ import main
from models.errors import TrainingConfigError
from models.registry import load_model, sha256_file
from models.train import TrainConfig, train


def _tiny(ebhi_dir: Path, out: Path) -> TrainConfig:
    return TrainConfig(
        data=ebhi_dir, out=out, epochs=1, batch_size=8, crop_px=96, limit=24, width=0.5, seed=3
    )


def test_one_epoch_smoke(ebhi_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "a" / "crc-tumour"
    metrics = train(_tiny(ebhi_dir, out))
    assert [row["epoch"] for row in metrics["history"]] == [1]
    assert metrics["history"][0]["loss"] > 0
    assert {"dice_epithelium", "dice_tumour"} <= metrics["val"].keys()
    assert json.loads((out / "metrics.json").read_text())["config"]["seed"] == 3
    card, model = load_model("crc-tumour", "cpu", tmp_path / "a")
    assert card.architecture_args["width"] == 0.5
    assert not model.training
    assert card.quality.dice_epithelium == round(metrics["val"]["dice_epithelium"], 4)
    # same seed, same data -> the same weights, byte for byte
    again = tmp_path / "b" / "crc-tumour"
    train(_tiny(ebhi_dir, again))
    assert sha256_file(again / "weights.pt") == sha256_file(out / "weights.pt")


def test_train_cli_errors_are_one_line(
    ebhi_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 1
    assert "no split.csv" in capsys.readouterr().err
    assert main(["train", "--data", str(ebhi_dir), "--epochs", "0"]) == 1
    err = capsys.readouterr().err
    assert "epochs must be >= 1" in err and "Traceback" not in err
    with pytest.raises(TrainingConfigError, match="crop"):
        train(TrainConfig(data=ebhi_dir, out=tmp_path, crop_px=300))

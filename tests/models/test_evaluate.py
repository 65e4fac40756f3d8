"""Dice arithmetic and the EBHI labels: the README's trivial baseline comes out of our loader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.data import load_ebhi
from models.errors import DatasetError
from models.evaluate import DiceCounts, baselines, dice


def test_dice_values() -> None:
    a = np.array([1, 1, 0, 0], dtype=bool)
    b = np.array([1, 0, 1, 0], dtype=bool)
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(a, a) == 1.0
    assert dice(~(a | True), ~(b | True)) == 1.0  # both empty


def test_pooled_counts() -> None:
    counts = DiceCounts()
    target = np.array([[0, 1, 2, 2]])
    counts.update(np.array([[0, 2, 2, 0]]), target)
    scores = counts.scores()
    assert scores["dice_epithelium"] == pytest.approx(2 * 2 / (2 + 3))
    assert scores["dice_tumour"] == pytest.approx(2 * 1 / (2 + 2))


def test_val_labels_match_the_dataset_readme(ebhi_dir: Path) -> None:
    val = load_ebhi(ebhi_dir, "val")
    assert val.images.shape == (108, 224, 224, 3) and val.labels.shape == (108, 224, 224)
    assert len(set(val.cases)) == 15
    assert set(np.unique(val.labels)) == {0, 1, 2}
    base = baselines(val.labels)
    assert base["all_foreground_dice_epithelium"] == pytest.approx(0.757, abs=0.001)
    # normal / polyp images carry class 1 only, neoplastic ones class 2 only
    for label, folder in zip(val.labels, val.folders, strict=True):
        expected = 1 if folder in ("normal", "polyp") else 2
        assert set(np.unique(label)) <= {0, expected}


def test_missing_dataset(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"no split\.csv"):
        load_ebhi(tmp_path, "train")

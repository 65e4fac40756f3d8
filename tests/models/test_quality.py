"""The shipped weights on the real held-out val images must keep the quality the card claims."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.data import load_ebhi
from models.evaluate import DiceCounts, predict_labels
from models.registry import load_model


def test_shipped_weights_reach_the_card_dice(ebhi_dir: Path, shipped_name: str) -> None:
    card, model = load_model(shipped_name, "cpu")
    val = load_ebhi(ebhi_dir, "val")
    counts = DiceCounts()
    counts.update(predict_labels(model, val.images, card.mean, card.std), val.labels)
    scores = counts.scores()
    # The card reports exactly what the weights do (float noise only) ...
    assert scores["dice_epithelium"] == pytest.approx(card.quality.dice_epithelium, abs=0.005)
    assert scores["dice_tumour"] == pytest.approx(card.quality.dice_tumour, abs=0.005)
    # ... and a broken model or preprocessing falls well below these floors.
    assert scores["dice_epithelium"] >= 0.88
    assert scores["dice_tumour"] >= 0.85


def test_wrong_normalisation_is_caught(ebhi_dir: Path, shipped_name: str) -> None:
    """Guard for the floor above: feeding 0..1 pixels without mean/std must fail it."""
    _card, model = load_model(shipped_name, "cpu")
    val = load_ebhi(ebhi_dir, "val", limit=40)
    counts = DiceCounts()
    counts.update(predict_labels(model, val.images, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)), val.labels)
    assert counts.scores()["dice_tumour"] < 0.85 or counts.scores()["dice_epithelium"] < 0.88

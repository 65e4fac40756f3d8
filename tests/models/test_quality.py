"""The shipped weights on the real held-out val images must keep the quality the card claims."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch import nn

from models.card import ModelCard
from models.data import Dataset, load_ebhi
from models.evaluate import DiceCounts, predict_labels
from models.registry import load_model


@pytest.fixture(scope="module")
def shipped(shipped_name: str) -> tuple[ModelCard, nn.Module]:
    return load_model(shipped_name, "cpu")


@pytest.fixture(scope="module")
def val(ebhi_dir: Path) -> Dataset:
    return load_ebhi(ebhi_dir, "val")


def test_shipped_weights_reach_the_card_dice(
    shipped: tuple[ModelCard, nn.Module], val: Dataset
) -> None:
    card, model = shipped
    counts = DiceCounts()
    counts.update(predict_labels(model, val.images, card.mean, card.std), val.labels)
    scores = counts.scores()
    # The card reports exactly what the weights do (float noise only) ...
    assert scores["dice_epithelium"] == pytest.approx(card.quality.dice_epithelium, abs=0.005)
    assert scores["dice_tumour"] == pytest.approx(card.quality.dice_tumour, abs=0.005)
    # ... and a broken model or preprocessing falls below these floors (measured 0.908 / 0.889).
    assert scores["dice_epithelium"] >= 0.88
    assert scores["dice_tumour"] >= 0.85


def test_wrong_normalisation_is_caught(shipped: tuple[ModelCard, nn.Module], val: Dataset) -> None:
    """Guard for the floors above: 0..1 pixels without the card's mean/std must fail them."""
    _card, model = shipped
    counts = DiceCounts()
    counts.update(predict_labels(model, val.images, (0.0,) * 3, (1.0,) * 3), val.labels)
    scores = counts.scores()
    assert scores["dice_tumour"] < 0.85 or scores["dice_epithelium"] < 0.88

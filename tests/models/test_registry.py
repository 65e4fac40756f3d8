"""Registry: listing, lookup, building, and weights that must match the card's SHA-256."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from models.__main__ import main
from models.errors import (
    InvalidCardError,
    ModelNotFoundError,
    UnknownArchitectureError,
    WeightsMismatchError,
    WeightsMissingError,
)
from models.registry import build_model, get_card, list_models, load_model, sha256_file


def test_list_and_get(models_root: Path, shipped_name: str) -> None:
    assert [card.name for card in list_models(models_root)] == [shipped_name]
    assert shipped_name in [card.name for card in list_models()]  # the package's own registry
    assert get_card(shipped_name, models_root).name == shipped_name


@pytest.mark.parametrize("name", ["nope", "../models", ".hidden", ""])
def test_unknown_model(models_root: Path, name: str) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        get_card(name, models_root)
    assert info.value.code == "model_not_found"


def test_load_checks_hash_and_runs(models_root: Path, shipped_name: str) -> None:
    card, model = load_model(shipped_name, "cpu", models_root)
    assert sha256_file(card.weights_path) == card.weights_sha256
    assert not model.training
    with torch.inference_mode():
        logits = model(torch.zeros(2, 3, 100, 130))  # any size, not only multiples of 32
    assert type(logits) is torch.Tensor
    assert logits.shape == (2, card.num_classes, 100, 130)
    assert logits.dtype == torch.float32


def test_tampered_weights_are_refused(models_root: Path, shipped_name: str) -> None:
    weights = get_card(shipped_name, models_root).weights_path
    blob = bytearray(weights.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    weights.write_bytes(bytes(blob))
    with pytest.raises(WeightsMismatchError, match="sha256") as info:
        load_model(shipped_name, "cpu", models_root)
    assert info.value.code == "weights_mismatch"


def test_missing_weights(models_root: Path, shipped_name: str) -> None:
    get_card(shipped_name, models_root).weights_path.unlink()
    with pytest.raises(WeightsMissingError, match="missing"):
        load_model(shipped_name, "cpu", models_root)


def test_weights_of_another_architecture(models_root: Path, shipped_name: str) -> None:
    card = get_card(shipped_name, models_root)
    torch.save({"w": torch.zeros(3)}, card.weights_path)
    text = (card.directory / "card.toml").read_text()
    text = text.replace(card.weights_sha256, sha256_file(card.weights_path))
    (card.directory / "card.toml").write_text(text)
    with pytest.raises(InvalidCardError, match="do not fit"):
        load_model(shipped_name, "cpu", models_root)


def test_unknown_architecture(models_root: Path, shipped_name: str) -> None:
    folder = models_root / shipped_name
    text = (folder / "card.toml").read_text()
    (folder / "card.toml").write_text(text.replace('"mobile_unet"', '"resnet9000"'))
    with pytest.raises(UnknownArchitectureError, match="resnet9000"):
        build_model(get_card(shipped_name, models_root))


def test_cli_list_json_and_show(capsys: pytest.CaptureFixture[str], shipped_name: str) -> None:
    assert main(["models", "list", "--json"]) == 0
    cards = json.loads(capsys.readouterr().out)
    mine = next(card for card in cards if card["name"] == shipped_name)
    assert len(mine["sha256"]) == 64 and mine["mpp"] == 1.0
    assert mine["quality"]["dice_tumour"] > 0.5
    assert main(["models", "list"]) == 0
    assert shipped_name in capsys.readouterr().out
    assert main(["models", "show", shipped_name]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == shipped_name
    assert main(["models", "show", "no-such-model"]) == 1
    err = capsys.readouterr().err
    assert "no model 'no-such-model'" in err and "Traceback" not in err


def test_loaded_model_has_batch_norms_folded_and_computes_the_same(
    models_root: Path, shipped_name: str
) -> None:
    """load_model folds every batch norm into its convolution; the logits are those of the
    unfolded network with the same weights (a wrong fold changes them by far more than 1e-3)."""
    card, folded = load_model(shipped_name, "cpu", models_root)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    plain = build_model(card)
    state = torch.load(card.weights_path, map_location="cpu", weights_only=True)
    plain.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    plain.eval()
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules()) > 10
    x = torch.randn(2, 3, 96, 128, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected, actual = plain(x), folded(x)
    assert (expected - actual).abs().max().item() < 1e-3
    assert expected.std().item() > 0.1  # the comparison is not between two near-zero outputs


def test_folding_refuses_a_model_in_training_mode(models_root: Path, shipped_name: str) -> None:
    from models.fold import fold_batchnorm

    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(build_model(get_card(shipped_name, models_root)))

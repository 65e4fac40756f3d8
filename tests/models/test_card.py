"""card.toml parsing: the shipped card is complete, and malformed cards fail with a clear error."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from models.card import load_card, parse_card
from models.errors import InvalidCardError
from models.train import render_card


def _rewrite(folder: Path, old: str, new: str) -> None:
    card = folder / "card.toml"
    text = card.read_text()
    assert old in text
    card.write_text(text.replace(old, new, 1))


def test_shipped_card_is_complete(models_root: Path, shipped_name: str) -> None:
    card = load_card(models_root / shipped_name)
    assert card.name == shipped_name
    assert [c.name for c in card.classes] == ["background", "epithelium", "tumour"]
    assert card.class_index("tumour") == 2
    assert card.classes[2].rgb == (0xD6, 0x27, 0x28)
    assert card.mpp == pytest.approx(1.0)
    assert card.patch_size_px == 256 and 0 < card.overlap_px < 128
    assert len(card.mean) == len(card.std) == 3
    assert card.quality.split == "val"
    assert card.quality.dice_epithelium > card.quality.baselines["all_foreground_dice_epithelium"]
    assert card.quality.dice_tumour > card.quality.baselines["all_tumour_dice_tumour"]
    assert "CC BY 4.0" in card.training_licence
    assert card.weights_path.is_file()
    assert card.weights_path.stat().st_size <= 5 * 1024 * 1024


def test_card_json_has_the_contract_keys(models_root: Path, shipped_name: str) -> None:
    data = json.loads(json.dumps(load_card(models_root / shipped_name).to_json()))
    assert {"name", "classes", "mpp", "sha256", "quality"} <= data.keys()
    assert data["quality"]["split"] == "val"
    assert {"dice_epithelium", "dice_tumour", "baselines", "dice"} <= data["quality"].keys()
    assert data["quality"]["dice"]["tumour"] == data["quality"]["dice_tumour"]
    assert data["classes"][2] == {"index": 2, "name": "tumour", "color": "#d62728"}


def test_render_round_trips(models_root: Path, shipped_name: str) -> None:
    card = load_card(models_root / shipped_name)
    again = parse_card(tomllib.loads(render_card(card)), card.directory)
    assert again == card


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('color = "#d62728"', 'color = "red"', "not #rrggbb"),
        ("mpp = 1.0", 'mpp = "1.0"', "'mpp' has the wrong type"),
        ("mpp = 1.0", "mpp = -1.0", "need mpp > 0"),
        ("[weights]\nfile", "[weights]\nfilename", "missing key 'file'"),
        ('sha256 = "', 'sha256 = "zz', "64 lowercase hex"),
        ("index = 2", "index = 5", "out of order"),
    ],
)
def test_malformed_card_is_a_specific_error(
    models_root: Path, shipped_name: str, old: str, new: str, message: str
) -> None:
    _rewrite(models_root / shipped_name, old, new)
    with pytest.raises(InvalidCardError, match=message) as info:
        load_card(models_root / shipped_name)
    assert info.value.code == "invalid_model_card"


def test_not_toml_and_wrong_folder(models_root: Path, shipped_name: str) -> None:
    folder = models_root / shipped_name
    renamed = folder.rename(models_root / "other")
    with pytest.raises(InvalidCardError, match="!= folder name"):
        load_card(renamed)
    (renamed / "card.toml").write_text("name = [unclosed")
    with pytest.raises(InvalidCardError, match="not valid TOML"):
        load_card(renamed)
    with pytest.raises(InvalidCardError, match=r"no card\.toml"):
        load_card(models_root)

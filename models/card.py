"""The model card: everything a caller needs to run a model correctly, read from ``card.toml``.

A card is the contract between training and inference: input µm/px, patch size and overlap,
normalisation, class order and colours, the weights' SHA-256, and the measured quality of the
shipped weights. Parsing is strict so a typo fails at load, not as a silently wrong overlay.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from models.errors import InvalidCardError

__all__ = ["CARD_FILE", "ClassInfo", "ModelCard", "Quality", "load_card", "parse_card"]

CARD_FILE = "card.toml"
_HEX_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class ClassInfo:
    """One output channel: its index in the logits, a name and a display colour ``#rrggbb``."""

    index: int
    name: str
    color: str

    @property
    def rgb(self) -> tuple[int, int, int]:
        """The colour as (r, g, b) 0..255, for overlays."""
        return (int(self.color[1:3], 16), int(self.color[3:5], 16), int(self.color[5:7], 16))


@dataclass(frozen=True)
class Quality:
    """Measured quality of the shipped weights on a held-out split (Dice, 0..1)."""

    split: str
    dice_epithelium: float
    dice_tumour: float
    baselines: Mapping[str, float] = field(default_factory=dict)
    notes: str = ""


@dataclass(frozen=True)
class ModelCard:
    """A registered model. Arrays fed to it are (N, 3, H, W) RGB at ``mpp`` µm/px, normalised."""

    name: str
    version: str
    architecture: str
    architecture_args: Mapping[str, float]
    classes: tuple[ClassInfo, ...]
    mpp: float
    patch_size_px: int
    overlap_px: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights_file: str
    weights_sha256: str
    weights_dtype: str
    training_data: str
    training_licence: str
    training_command: str
    quality: Quality
    intended_use: str
    limits: tuple[str, ...]
    directory: Path

    @property
    def weights_path(self) -> Path:
        """Where the weights sit: beside the card."""
        return self.directory / self.weights_file

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def class_index(self, name: str) -> int:
        """Index of the class called ``name`` (e.g. ``"tumour"``)."""
        for info in self.classes:
            if info.name == name:
                return info.index
        raise InvalidCardError(f"model {self.name!r} has no class {name!r}")

    def to_json(self) -> dict[str, Any]:
        """The card as plain JSON types (``iain models list --json``); ``sha256`` at top level."""
        data = asdict(self)
        data["directory"] = str(self.directory)
        data["sha256"] = self.weights_sha256
        data["quality"] = dict(
            data["quality"],
            baselines=dict(self.quality.baselines),
            dice={"epithelium": self.quality.dice_epithelium, "tumour": self.quality.dice_tumour},
        )
        data["architecture_args"] = dict(self.architecture_args)
        data["classes"] = [asdict(c) for c in self.classes]
        data["mean"], data["std"], data["limits"] = (
            list(self.mean),
            list(self.std),
            list(self.limits),
        )
        return data


def _get(table: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in table:
        raise InvalidCardError(f"{where}: missing key {key!r}")
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise InvalidCardError(f"{where}: {key!r} has the wrong type ({type(value).__name__})")
    return value


def _triple(table: Mapping[str, Any], key: str, where: str) -> tuple[float, float, float]:
    values = _get(table, key, list, where)
    if len(values) != 3 or not all(isinstance(v, int | float) for v in values):
        raise InvalidCardError(f"{where}: {key!r} must be three numbers (R, G, B)")
    return (float(values[0]), float(values[1]), float(values[2]))


def _classes(raw: Any, where: str) -> tuple[ClassInfo, ...]:
    if not isinstance(raw, list) or not raw:
        raise InvalidCardError(f"{where}: [[classes]] must be a non-empty array of tables")
    classes = []
    for i, entry in enumerate(raw):
        here = f"{where} classes[{i}]"
        index = _get(entry, "index", int, here)
        color = _get(entry, "color", str, here)
        if index != i:
            raise InvalidCardError(f"{here}: index {index} out of order (expected {i})")
        if not _HEX_COLOR.match(color):
            raise InvalidCardError(f"{here}: color {color!r} is not #rrggbb")
        classes.append(ClassInfo(index=index, name=_get(entry, "name", str, here), color=color))
    return tuple(classes)


def parse_card(data: Mapping[str, Any], directory: Path, where: str = "card.toml") -> ModelCard:
    """Build a card from parsed TOML; every missing or mistyped key is an ``InvalidCardError``."""
    inp = _get(data, "input", dict, where)
    weights = _get(data, "weights", dict, where)
    training = _get(data, "training", dict, where)
    qual = _get(data, "quality", dict, where)
    sha = _get(weights, "sha256", str, f"{where} [weights]")
    if not _SHA256.match(sha):
        raise InvalidCardError(f"{where} [weights]: sha256 must be 64 lowercase hex digits")
    mpp = float(_get(inp, "mpp", (int, float), f"{where} [input]"))
    patch = _get(inp, "patch_size_px", int, f"{where} [input]")
    overlap = _get(inp, "overlap_px", int, f"{where} [input]")
    if mpp <= 0 or patch <= 0 or not 0 <= overlap < patch // 2:
        raise InvalidCardError(f"{where} [input]: need mpp > 0, patch > 0, 0 <= overlap < patch/2")
    baselines = qual.get("baselines", {})
    if not isinstance(baselines, dict) or not all(
        isinstance(v, int | float) for v in baselines.values()
    ):
        raise InvalidCardError(f"{where} [quality.baselines]: values must be numbers")
    arch_args = data.get("architecture_args", {})
    if not isinstance(arch_args, dict):
        raise InvalidCardError(f"{where}: architecture_args must be a table")
    limits = _get(data, "limits", list, where)
    return ModelCard(
        name=_get(data, "name", str, where),
        version=_get(data, "version", str, where),
        architecture=_get(data, "architecture", str, where),
        architecture_args=dict(arch_args),
        classes=_classes(data.get("classes"), where),
        mpp=mpp,
        patch_size_px=patch,
        overlap_px=overlap,
        mean=_triple(inp, "mean", f"{where} [input]"),
        std=_triple(inp, "std", f"{where} [input]"),
        weights_file=_get(weights, "file", str, f"{where} [weights]"),
        weights_sha256=sha,
        weights_dtype=str(weights.get("dtype", "float32")),
        training_data=_get(training, "data", str, f"{where} [training]"),
        training_licence=_get(training, "licence", str, f"{where} [training]"),
        training_command=str(training.get("command", "")),
        quality=Quality(
            split=_get(qual, "split", str, f"{where} [quality]"),
            dice_epithelium=float(
                _get(qual, "dice_epithelium", (int, float), f"{where} [quality]")
            ),
            dice_tumour=float(_get(qual, "dice_tumour", (int, float), f"{where} [quality]")),
            baselines={str(k): float(v) for k, v in baselines.items()},
            notes=str(qual.get("notes", "")),
        ),
        intended_use=_get(data, "intended_use", str, where),
        limits=tuple(str(item) for item in limits),
        directory=directory,
    )


def load_card(directory: Path) -> ModelCard:
    """Read ``directory/card.toml``; a missing or malformed file is an ``InvalidCardError``."""
    path = directory / CARD_FILE
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InvalidCardError(f"no {CARD_FILE} in model folder {directory.name!r}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InvalidCardError(f"{directory.name}/{CARD_FILE}: not valid TOML ({exc})") from exc
    card = parse_card(data, directory, where=f"{directory.name}/{CARD_FILE}")
    if card.name != directory.name:
        raise InvalidCardError(f"{directory.name}/{CARD_FILE}: name {card.name!r} != folder name")
    return card

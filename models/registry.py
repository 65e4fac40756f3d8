"""The model registry: list cards, build architectures, load hash-checked weights.

Nothing here downloads: weights sit beside their card (or are mounted under ``MODELS_DIR``) and
their SHA-256 must equal the card's before ``torch.load`` sees a byte.
"""

from __future__ import annotations

import hashlib
import io
import logging
from pathlib import Path

import torch
from torch import nn

from models.card import CARD_FILE, ModelCard, load_card
from models.config import ModelsSettings
from models.errors import (
    InvalidCardError,
    ModelNotFoundError,
    UnknownArchitectureError,
    WeightsMismatchError,
    WeightsMissingError,
)
from models.fold import fold_batchnorm
from models.nets import MobileUNet

__all__ = ["ARCHITECTURES", "build_model", "get_card", "list_models", "load_model", "sha256_file"]

logger = logging.getLogger(__name__)

ARCHITECTURES = ("mobile_unet",)


def _root(root: Path | None) -> Path:
    return root if root is not None else ModelsSettings().root


def list_models(root: Path | None = None) -> list[ModelCard]:
    """Every valid card under ``root``, sorted by name (a broken card raises: fail loudly)."""
    base = _root(root)
    folders = sorted(p for p in base.iterdir() if (p / CARD_FILE).is_file())
    return [load_card(folder) for folder in folders]


def get_card(name: str, root: Path | None = None) -> ModelCard:
    """The card of model ``name``; ``ModelNotFoundError`` lists the known names."""
    base = _root(root)
    if "/" in name or "\\" in name or name.startswith(".") or not name:
        raise ModelNotFoundError(f"invalid model name {name!r}")
    folder = base / name
    if not (folder / CARD_FILE).is_file():
        known = ", ".join(card.name for card in list_models(base)) or "none"
        raise ModelNotFoundError(f"no model {name!r} (known: {known})")
    return load_card(folder)


def build_model(card: ModelCard) -> nn.Module:
    """A freshly initialised network for ``card``: forward maps (N,3,H,W) to logits (N,C,H,W)."""
    if card.architecture == "mobile_unet":
        width = float(card.architecture_args.get("width", 1.0))
        return MobileUNet(num_classes=card.num_classes, width=width)
    raise UnknownArchitectureError(
        f"model {card.name!r}: unknown architecture {card.architecture!r} "
        f"(known: {', '.join(ARCHITECTURES)})"
    )


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_model(
    name: str, device: str | torch.device = "cpu", root: Path | None = None
) -> tuple[ModelCard, nn.Module]:
    """Card and network with its weights, in eval mode and float32, on ``device``, batch
    norms folded into their convolutions (``models.fold``: for inference, not for training).

    The weights file's SHA-256 is checked against the card before it is unpickled
    (``weights_only``), so a swapped or truncated file never runs.
    """
    card = get_card(name, root)
    path = card.weights_path
    try:
        blob = path.read_bytes()
    except FileNotFoundError as exc:
        raise WeightsMissingError(
            f"model {name!r}: weights file {card.weights_file!r} missing"
        ) from exc
    actual = hashlib.sha256(blob).hexdigest()
    if actual != card.weights_sha256:
        raise WeightsMismatchError(
            f"model {name!r}: {card.weights_file} has sha256 {actual[:12]}..., "
            f"card says {card.weights_sha256[:12]}..."
        )
    model = build_model(card)
    try:
        state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
        state = {
            key: value.float() if value.is_floating_point() else value
            for key, value in state.items()
        }
        model.load_state_dict(state)
    except (RuntimeError, KeyError, AttributeError) as exc:
        raise InvalidCardError(
            f"model {name!r}: weights do not fit {card.architecture}: {exc}"
        ) from exc
    model.eval()
    folded = fold_batchnorm(model)  # inference only: same function, ~20 % faster
    logger.info(
        "loaded model %s %s (%s, %d batch norms folded)",
        card.name, card.version, card.architecture, folded,
    )  # fmt: skip
    return card, model.to(device)

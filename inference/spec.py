"""What the engine needs to know about a model, and how a model is found by name.

The engine never imports a model card: it takes a :class:`ModelSpec` (built from the models
package's card with :meth:`ModelSpec.from_card`) and any ``Callable[[Tensor], Tensor]`` that maps a
normalised (N, 3, H, W) float batch to (N, C, H', W') logits.

``--model NAME`` resolves through ``models.registry.load_model(name, device)``; a name of the form
``package.module:factory`` calls ``factory(device) -> (ModelSpec | card, model)`` instead, for
models outside the registry (experiments, the tests' tiny models, dask workers).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from inference.errors import ModelLoadError, ModelNotFoundError

__all__ = ["Model", "ModelSpec", "load_named_model"]

logger = logging.getLogger(__name__)

Model = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Model facts the pipeline uses: classes, scale, patch geometry, normalisation.

    ``classes[0]`` is background (what glass becomes); ``colors`` are RGB per class.
    ``tile_size_px`` and ``overlap_px`` are in model pixels (at ``mpp``); neighbouring patches
    share ``overlap_px`` pixels, so each has ``overlap_px // 2`` of context on every side.
    """

    name: str
    version: str
    classes: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    mpp: float
    tile_size_px: int = 256
    overlap_px: int = 32
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def __post_init__(self) -> None:
        if len(self.classes) < 2 or len(self.colors) != len(self.classes):
            raise ValueError("a model needs >= 2 classes and one colour per class")
        if not 0 <= self.overlap_px <= self.tile_size_px // 2:
            raise ValueError(f"overlap {self.overlap_px} not in 0..{self.tile_size_px // 2}")
        if self.mpp <= 0:
            raise ValueError(f"model mpp {self.mpp} must be > 0")

    @classmethod
    def from_card(cls, card: Any) -> ModelSpec:
        """Read a models-package card; tolerant of field spellings while that package settles."""
        if isinstance(card, ModelSpec):
            return card

        def pick(*names: str, default: Any = None) -> Any:
            for name in names:
                if isinstance(card, dict) and name in card:
                    return card[name]
                if hasattr(card, name):
                    return getattr(card, name)
            return default

        raw_classes = list(pick("classes", default=[]))
        names: list[str] = []
        colors: list[tuple[int, int, int]] = []
        card_colors = pick("colors", "colours", default=None)
        for index, item in enumerate(raw_classes):
            if isinstance(item, str):
                names.append(item)
                color = card_colors[index] if card_colors is not None else None
            else:
                names.append(str(_field(item, "name")))
                color = _field(item, "color", "colour", "rgb")
            colors.append(_parse_color(color, index))
        norm = pick("normalisation", "normalization", default=None)
        mean = pick("mean", default=None) or (_field(norm, "mean") if norm is not None else None)
        std = pick("std", default=None) or (_field(norm, "std") if norm is not None else None)
        return cls(
            name=str(pick("name")),
            version=str(pick("version", default="0")),
            classes=tuple(names),
            colors=tuple(colors),
            mpp=float(pick("mpp", "input_mpp")),
            tile_size_px=int(
                pick("tile_size_px", "patch_size_px", "tile_size", "patch_size", default=256)
            ),
            overlap_px=int(pick("overlap_px", "overlap", default=32)),
            mean=tuple(float(v) for v in (mean or (0.485, 0.456, 0.406))),  # type: ignore[arg-type]
            std=tuple(float(v) for v in (std or (0.229, 0.224, 0.225))),  # type: ignore[arg-type]
        )


def _field(item: Any, *names: str) -> Any:
    for name in names:
        if isinstance(item, dict) and name in item:
            return item[name]
        if hasattr(item, name):
            return getattr(item, name)
    return None


_DEFAULT_COLORS = ((0, 0, 0), (0, 160, 0), (220, 0, 0), (0, 0, 220), (220, 220, 0))


def _parse_color(color: Any, index: int) -> tuple[int, int, int]:
    if color is None:
        return _DEFAULT_COLORS[index % len(_DEFAULT_COLORS)]
    if isinstance(color, str):
        text = color.lstrip("#")
        return int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16)
    r, g, b = list(color)[:3]
    return int(r), int(g), int(b)


def load_named_model(name: str, device: torch.device) -> tuple[ModelSpec, torch.nn.Module | Model]:
    """Load a model once: from the registry, or from ``module:factory``."""
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ModelNotFoundError(f"model factory {name!r} not found") from exc
        card, model = factory(device)
    else:
        try:
            registry = importlib.import_module("models.registry")
        except ImportError as exc:
            raise ModelNotFoundError(f"model {name!r}: no model registry installed") from exc
        try:
            card, model = registry.load_model(name, device)
        except LookupError as exc:
            raise ModelNotFoundError(f"model {name!r} not found") from exc
        except Exception as exc:  # models' errors (weights missing, hash mismatch, bad card)
            code = getattr(exc, "code", type(exc).__name__)
            raise ModelLoadError(f"model {name!r} cannot be loaded ({code}): {exc}") from exc
    spec = ModelSpec.from_card(card)
    if isinstance(model, torch.nn.Module):
        model.eval()
    logger.info("model %s %s loaded on %s", spec.name, spec.version, device)
    return spec, model

"""Settings of the model registry (prefix ``MODELS_``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PACKAGE_DIR", "ModelsSettings"]

PACKAGE_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class ModelsSettings:
    """``root``: the folder holding one sub-folder per model (``<root>/<name>/card.toml``).

    Defaults to the models shipped inside the package; ``MODELS_DIR`` points at weights
    mounted at deploy time instead.
    """

    root: Path = PACKAGE_DIR

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ModelsSettings:
        root = environ.get("MODELS_DIR")
        return cls(root=Path(root) if root else PACKAGE_DIR)

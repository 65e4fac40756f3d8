"""Errors raised by the model registry and training.

::

    ModelError                      base; ``code`` is a stable machine string
    ├── ModelNotFoundError          (also LookupError) no model folder of that name
    ├── InvalidCardError            (also ValueError) card.toml missing, unparsable or incomplete
    ├── WeightsMissingError         (also FileNotFoundError) the card names a file that is not there
    ├── WeightsMismatchError        the weights' SHA-256 differs from the card's
    ├── UnknownArchitectureError    the card names an architecture ``build_model`` cannot build
    ├── DatasetError                training data missing or malformed
    └── TrainingConfigError         (also ValueError) a training option out of range
"""

from __future__ import annotations

__all__ = [
    "DatasetError",
    "InvalidCardError",
    "ModelError",
    "ModelNotFoundError",
    "TrainingConfigError",
    "UnknownArchitectureError",
    "WeightsMismatchError",
    "WeightsMissingError",
]


class ModelError(Exception):
    """Base of every error about a registered model."""

    code = "model_error"


class ModelNotFoundError(ModelError, LookupError):
    code = "model_not_found"


class InvalidCardError(ModelError, ValueError):
    code = "invalid_model_card"


class WeightsMissingError(ModelError, FileNotFoundError):
    code = "weights_missing"


class WeightsMismatchError(ModelError):
    code = "weights_mismatch"


class UnknownArchitectureError(ModelError, ValueError):
    code = "unknown_architecture"


class DatasetError(ModelError):
    code = "dataset_error"


class TrainingConfigError(ModelError, ValueError):
    code = "invalid_training_config"

"""Errors raised by the inference pipeline.

::

    InferenceError                  base; ``code`` is a stable machine string
    ├── StoreNotFoundError          (also FileNotFoundError) no pyramid at that path
    ├── InvalidStoreError           a path that is not an IAIN OME-Zarr pyramid
    ├── MissingMppError             the slide has no microns-per-pixel and none was given
    ├── ModelNotFoundError          (also LookupError) no such model
    ├── ModelLoadError              the model exists but cannot be loaded (weights, card)
    ├── DeviceUnavailableError      ``--device cuda`` without a CUDA device
    ├── InvalidImageError           ``predict`` input that is not a readable image
    ├── InvalidRequestError         (also ValueError) a bad option (batch size, mpp)
    ├── JobNotFoundError            (also LookupError) no job with that id
    ├── JobNotDoneError             results asked for before the job is done
    └── InferenceCancelledError     a job was cancelled while running

``HTTP_STATUS`` maps each class to the status code the server answers with.
"""

from __future__ import annotations

__all__ = [
    "HTTP_STATUS",
    "DeviceUnavailableError",
    "InferenceCancelledError",
    "InferenceError",
    "InvalidImageError",
    "InvalidRequestError",
    "InvalidStoreError",
    "JobNotDoneError",
    "JobNotFoundError",
    "MissingMppError",
    "ModelLoadError",
    "ModelNotFoundError",
    "StoreNotFoundError",
]


class InferenceError(Exception):
    """Base of every inference error."""

    code = "inference_error"


class StoreNotFoundError(InferenceError, FileNotFoundError):
    code = "store_not_found"


class InvalidStoreError(InferenceError):
    code = "invalid_store"


class MissingMppError(InferenceError):
    code = "missing_mpp"


class ModelNotFoundError(InferenceError, LookupError):
    code = "model_not_found"


class ModelLoadError(InferenceError):
    code = "model_load_failed"


class DeviceUnavailableError(InferenceError):
    code = "device_unavailable"


class InvalidImageError(InferenceError):
    code = "invalid_image"


class InvalidRequestError(InferenceError, ValueError):
    code = "invalid_request"


class JobNotFoundError(InferenceError, LookupError):
    code = "job_not_found"


class JobNotDoneError(InferenceError):
    code = "job_not_done"


class InferenceCancelledError(InferenceError):
    code = "cancelled"


HTTP_STATUS: dict[type[InferenceError], int] = {
    StoreNotFoundError: 404,
    InvalidStoreError: 422,
    MissingMppError: 422,
    ModelNotFoundError: 404,
    ModelLoadError: 503,
    DeviceUnavailableError: 503,
    InvalidImageError: 415,
    InvalidRequestError: 422,
    JobNotFoundError: 404,
    JobNotDoneError: 409,
    InferenceCancelledError: 409,
    InferenceError: 500,
}

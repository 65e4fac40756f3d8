"""Converter settings from the environment: numbers parsed, bad values named."""

from __future__ import annotations

import pytest

from tiling.config import DEFAULT_MIN_PSNR, TilingConfig


def test_settings_from_env() -> None:
    config = TilingConfig.from_env({"TILING_WORKERS": "3", "TILING_MIN_PSNR": "36.5"})
    assert config.workers == 3 and config.min_psnr == 36.5
    assert TilingConfig.from_env({"TILING_MIN_PSNR": ""}).min_psnr == DEFAULT_MIN_PSNR


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TILING_WORKERS": "2.5"}, "TILING_WORKERS='2.5' is not an integer"),
        ({"TILING_MIN_PSNR": "high"}, "TILING_MIN_PSNR='high' is not a number"),
    ],
)
def test_bad_numbers_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TilingConfig.from_env(env)

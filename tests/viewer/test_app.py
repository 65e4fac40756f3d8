"""The application: health, the slide catalogue API, error mapping."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.viewer.conftest import HEIGHT, TILE, WIDTH, make_settings
from tests.viewer.pyramids import synthetic_rgb, write_pyramid
from viewer.app import create_app
from viewer.config import ServerSettings
from viewer.errors import ConfigError


def test_healthz_and_readyz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["pyramids"] == 4


def test_slide_list_describes_each_valid_pyramid(client: TestClient) -> None:
    slides = client.get("/api/slides").json()
    assert [s["name"] for s in slides] == ["alpha", "sparse", "tiny"]  # broken.zarr skipped
    alpha = slides[0]
    assert (alpha["width"], alpha["height"], alpha["tile_size"]) == (WIDTH, HEIGHT, TILE)
    assert alpha["mpp"] == {"x": 0.5, "y": 0.5}
    assert alpha["levels"] == 3 and alpha["vendor"] == "synthetic"
    assert alpha["objective_power"] == 20.0
    assert slides[2]["mpp"] is None
    for slide in slides:
        assert len(slide["id"]) == 24 and "zarr" not in slide["id"]
        assert "/" not in slide["id"] and "alpha" not in slide["id"]
        detail = client.get(f"/api/slides/{slide['id']}").json()
        assert detail.pop("overlays") == []  # the detail adds AI label layers (none here)
        assert detail == slide


def test_ids_are_stable_across_processes_and_paths(
    tmp_path: Path, slide_ids: dict[str, str]
) -> None:
    """Same content at another path in a fresh app gets the same id (any worker answers)."""
    data = tmp_path / "elsewhere"
    data.mkdir()
    write_pyramid(data / "renamed.zarr", synthetic_rgb(WIDTH, HEIGHT, seed=1), tile=TILE)
    with TestClient(create_app(make_settings(data, tmp_path / "c"))) as other:
        (slide,) = other.get("/api/slides").json()
    assert slide["id"] == slide_ids["alpha"] and slide["name"] == "renamed"


def test_new_pyramids_appear_without_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with TestClient(create_app(make_settings(data, tmp_path / "c"))) as client:
        assert client.get("/api/slides").json() == []
        write_pyramid(data / "late.zarr", synthetic_rgb(300, 200), tile=TILE)
        time.sleep(0.6)  # the catalogue rescans after catalog_refresh_s = 0.5
        assert [s["name"] for s in client.get("/api/slides").json()] == ["late"]


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/api/slides/ffffffffffffffffffffffff", 404, "slide_not_found"),
        ("/api/slides/..%2F..%2Fetc%2Fpasswd", 404, "not_found"),
        ("/api/slides/%00", 400, "invalid_tile_request"),
        ("/slides/a%2e%2e_files/0/0_0.jpeg", 400, "invalid_tile_request"),
        ("/nowhere", 404, "not_found"),
    ],
)
def test_errors_are_json_with_a_code(client: TestClient, path: str, status: int, code: str) -> None:
    response = client.get(path)
    assert response.status_code == status
    assert response.json()["error"] == code


def test_settings_from_env() -> None:
    settings = ServerSettings.from_env(
        {"IAIN_DATA": "s3://bucket/x", "IAIN_PORT": "9001", "IAIN_WORKERS": "2", "HOME": "/"}
    )
    assert (settings.data, settings.port, settings.workers) == ("s3://bucket/x", 9001, 2)
    assert ServerSettings.from_env(settings.to_env()) == settings
    with pytest.raises(ConfigError, match="IAIN_PORT"):
        ServerSettings.from_env({"IAIN_PORT": "eighty"})
    with pytest.raises(ConfigError, match="port 0"):
        ServerSettings.from_env({"IAIN_PORT": "0"})

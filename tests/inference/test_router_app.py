"""The jobs API inside the real app (accounts, access hook, uvicorn): a job on a converted slide
runs, its labels become an overlay whose tiles are opaque where the model says tumour, and a
pathologist's review is recorded in the audit trail and shown as the overlay's status."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from PIL import Image

from inference.config import InferenceSettings
from share import audit
from share.config import ShareSettings
from tests.inference.conftest import HEIGHT, WIDTH
from tests.inference.helpers import regions_image, write_store
from tests.share.conftest import LiveServer, login
from viewer.app import create_app
from viewer.config import ServerSettings

TOY = "tests.inference.helpers:colour_factory"


@dataclass(frozen=True)
class App:
    url: str
    slide_id: str
    app: FastAPI


@pytest.fixture
def real_app(tmp_path: Path) -> Iterator[App]:
    data = tmp_path / "data"
    data.mkdir()
    write_store(data / "regions.zarr", regions_image(WIDTH, HEIGHT)[0])
    server = ServerSettings(data=str(data), cache_dir=str(tmp_path / "cache"), loop="asyncio")
    share = ShareSettings(
        data_dir=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'iain.db'}",
        argon2_time_cost=1,
        argon2_memory_kib=1024,
    )
    inference = InferenceSettings(jobs_dir=tmp_path / "jobs", devices=("cpu",), unit_chunks=1)
    app = create_app(server, share, inference)
    with LiveServer(app) as url:
        accounts = app.state.accounts
        users = (("caen-patho", "caen", "pathologist"), ("caen-ml", "caen", "ml"))
        for name, centre, role in (*users, ("lille-patho", "lille", "pathologist")):
            accounts.add_user(name, centre, role, f"{name}-password")
        ((ref, _),) = accounts.slides()
        assert ref.centre == "caen"
        yield App(url, ref.slide_id, app)


def _wait(client: httpx.Client, job_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/inference/jobs/{job_id}").json()
        if job["state"] in ("done", "failed", "cancelled"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish")


def _rgba(data: bytes) -> np.ndarray:  # type: ignore[type-arg]
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))


def test_job_on_a_slide_becomes_an_overlay_and_is_reviewed(real_app: App) -> None:
    sid = real_app.slide_id
    with (
        httpx.Client(base_url=real_app.url, timeout=10) as patho,
        httpx.Client(base_url=real_app.url, timeout=10) as ml,
        httpx.Client(base_url=real_app.url, timeout=10) as lille,
        httpx.Client(base_url=real_app.url, timeout=10) as anon,
    ):
        csrf = login(patho, "caen-patho")
        assert anon.post("/inference/jobs", json={"slide_id": sid, "model": TOY}).status_code == 401
        submitted = patho.post(
            "/inference/jobs", json={"slide_id": sid, "model": TOY}, headers=csrf
        )
        assert submitted.status_code == 202, submitted.text
        job = _wait(patho, submitted.json()["id"])
        assert job["state"] == "done", job
        assert patho.get(f"/inference/jobs/{job['id']}/results").json()["labels"] == "labels/toy"

        # another centre neither sees the job nor may run one on the slide
        lille_csrf = login(lille, "lille-patho")
        assert lille.get("/inference/jobs").json() == []
        assert lille.get(f"/inference/jobs/{job['id']}").status_code == 404
        denied = lille.post(
            "/inference/jobs", json={"slide_id": sid, "model": TOY}, headers=lille_csrf
        )
        assert denied.status_code == 404 and denied.json()["error"] == "slide_not_found"

        (overlay,) = patho.get(f"/api/slides/{sid}").json()["overlays"]
        assert overlay["status"] == "pending validation"
        # DeepZoom 11 = stored level 0; tile (1, 0) holds the tumour square's top-left part
        tile = patho.get(f"/slides/{sid}/labels/toy_files/11/1_0.png")
        assert tile.status_code == 200
        pixels = _rgba(tile.content)
        assert tuple(pixels[200, 400 - 256]) == (220, 0, 0, 255)  # tumour, opaque red
        glass = _rgba(patho.get(f"/slides/{sid}/labels/toy_files/11/0_0.png").content)
        assert glass[20, 20, 3] == 0  # background is transparent
        outlines = patho.get(f"/api/slides/{sid}/labels/toy/outlines").json()
        assert any(
            f["properties"]["classification"]["name"] == "tumour" for f in outlines["features"]
        )

        # human oversight: ml may not validate; the centre's pathologist may
        ml_csrf = login(ml, "caen-ml")
        review = f"/api/slides/{sid}/labels/toy/review"
        refused = ml.post(review, json={"decision": "accept"}, headers=ml_csrf)
        assert refused.status_code == 403 and refused.json()["error"] == "forbidden"
        assert (
            lille.post(review, json={"decision": "accept"}, headers=lille_csrf).status_code == 404
        )
        unknown = patho.post(
            f"/api/slides/{sid}/labels/nope/review", json={"decision": "accept"}, headers=csrf
        )
        assert unknown.status_code == 404
        bad = patho.post(review, json={"decision": "maybe"}, headers=csrf)
        assert bad.status_code == 422
        accepted = patho.post(review, json={"decision": "accept", "comment": "ok"}, headers=csrf)
        assert accepted.status_code == 200, accepted.text
        (overlay,) = patho.get(f"/api/slides/{sid}").json()["overlays"]
        assert overlay["status"] == "accepted" and overlay["review"]["by"] == "caen-patho"

    rows = audit.records(real_app.app.state.accounts.db, centre_id="caen", slide_id=sid)
    reviews = [r for r in rows if r["action"] == "labels.review"]
    assert [(r["actor"], r["detail"]["decision"]) for r in reviews] == [("caen-patho", "accept")]
    audit.verify(real_app.app.state.accounts.db)  # the hash chain still links

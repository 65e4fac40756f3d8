"""The jobs API over a real uvicorn: submit, progress, results, cancel, errors."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import httpx
import pytest

from inference.config import InferenceSettings
from inference.errors import InvalidRequestError
from inference.jobs import JobService, JobState
from tests.inference.conftest import JobsServer

TOY = "tests.inference.helpers:colour_factory"
SLOW = "tests.inference.helpers:slow_factory"


def _wait(client: httpx.Client, job_id: str, states: set[str], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/inference/jobs/{job_id}").json()
        if job["state"] in states:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached {states}: {job}")


def test_submit_run_and_fetch_results(jobs_server: JobsServer) -> None:
    with httpx.Client(base_url=jobs_server.url, timeout=10) as client:
        response = client.post("/inference/jobs", json={"slide_id": "slide-1", "model": TOY})
        assert response.status_code == 202
        job = response.json()
        assert job["state"] == "queued"
        assert client.get(f"/inference/jobs/{job['id']}/results").status_code == 409
        jobs_server.worker.start()
        done = _wait(client, job["id"], {"done", "failed"})
        assert done["state"] == "done", done
        assert done["units_done"] == done["units_total"] == 20 and done["patches_skipped"] > 0
        results = client.get(f"/inference/jobs/{job['id']}/results").json()
        assert results["labels"] == "labels/toy" and results["validation"] == "pending"
        outlines = client.get(results["outlines"])
        assert outlines.status_code == 200
        assert outlines.headers["content-type"] == "application/geo+json"
        assert outlines.json()["type"] == "FeatureCollection"
        assert [j["id"] for j in client.get("/inference/jobs").json()] == [job["id"]]
    # another server process sharing the folder answers for the same job
    other = JobService(jobs_server.service.root, jobs_server.service.resolve_slide)
    assert other.get(job["id"]).state == JobState.DONE
    assert (jobs_server.stores["slide-1"] / "labels" / "toy" / "0" / "zarr.json").exists()


def test_cancel_a_running_job(jobs_server: JobsServer) -> None:
    with httpx.Client(base_url=jobs_server.url, timeout=10) as client:
        job = client.post("/inference/jobs", json={"slide_id": "slide-1", "model": SLOW}).json()
        queued = client.post("/inference/jobs", json={"slide_id": "slide-1", "model": TOY}).json()
        assert client.post(f"/inference/jobs/{queued['id']}/cancel").json()["state"] == "cancelled"
        jobs_server.worker.start()
        _wait(client, job["id"], {"running"})
        client.post(f"/inference/jobs/{job['id']}/cancel")
        final = _wait(client, job["id"], {"cancelled", "done", "failed"})
        assert final["state"] == "cancelled"
        assert final["units_done"] < 20


def test_jobs_api_errors_are_specific(jobs_server: JobsServer) -> None:
    with httpx.Client(base_url=jobs_server.url, timeout=10) as client:
        missing = client.post("/inference/jobs", json={"slide_id": "nope", "model": TOY})
        assert missing.status_code == 404 and missing.json()["error"] == "store_not_found"
        assert client.get("/inference/jobs/" + "0" * 32).status_code == 404
        assert client.get("/inference/jobs/../../etc").status_code == 404
        assert client.post("/inference/jobs", json={"slide_id": "slide-1"}).status_code == 422
        bad_model = client.post("/inference/jobs", json={"slide_id": "slide-1", "model": "x:y"})
        job = bad_model.json()
        jobs_server.worker.start()
        failed = _wait(client, job["id"], {"failed", "done"})
        assert failed["state"] == "failed" and failed["error_code"] == "model_not_found"


def test_a_dead_servers_running_job_is_requeued_and_resumed(jobs_server: JobsServer) -> None:
    service = jobs_server.service
    job = service.submit("slide-1", TOY)
    assert service.claim_next() is not None  # a server claimed it, then died
    assert service.requeue_stale(max_age_s=3600) == []
    record = service.get(job.id)
    service._write(replace(record, updated=time.time() - 7200))
    assert service.requeue_stale(max_age_s=3600) == [job.id]
    assert jobs_server.worker.run_once()
    assert service.get(job.id).state == JobState.DONE


def test_settings_from_env() -> None:
    settings = InferenceSettings.from_env(
        {"INFERENCE_DEVICES": "cuda:0,cuda:1", "INFERENCE_BATCH": "32", "INFERENCE_JOBS_DIR": "/j"}
    )
    assert settings.devices == ("cuda:0", "cuda:1") and settings.batch_size == 32
    assert settings.engine_options().batch_size == 32 and str(settings.jobs_dir) == "/j"
    assert InferenceSettings.from_env({"INFERENCE_DEVICES": ""}).devices == ()
    assert settings.engine_options().schedule == "auto"
    threads = InferenceSettings.from_env({"INFERENCE_SCHEDULE": "threads"}).engine_options()
    assert threads.schedule == "threads"
    with pytest.raises(InvalidRequestError, match="INFERENCE_SCHEDULE='fast'"):
        InferenceSettings.from_env({"INFERENCE_SCHEDULE": "fast"})

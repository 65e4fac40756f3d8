"""HTTP edge of inference jobs: submit, progress, cancel, results.

``create_app`` keeps a :class:`~inference.jobs.JobService` on ``app.state.inference_jobs``,
starts one :class:`~inference.jobs.JobWorker` per device in its lifespan, maps
``inference.errors.HTTP_STATUS`` to responses and puts this router behind authorisation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, status
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from inference.errors import JobNotDoneError, JobNotFoundError
from inference.jobs import Job, JobService, JobState

__all__ = ["get_jobs", "router"]


def get_jobs(request: Request) -> JobService:
    service: JobService = request.app.state.inference_jobs
    return service


def get_access(request: Request) -> Callable[[str], None]:
    """The app's slide access hook, when it has one: jobs of slides the caller may not see
    answer like unknown ones (the hook raises its not-found error)."""
    hook = getattr(request.app.state, "slide_access", None)
    if hook is None:
        return lambda _slide_id: None
    return lambda slide_id: hook(request, slide_id)


Jobs = Annotated[JobService, Depends(get_jobs)]
Access = Annotated[Callable[[str], None], Depends(get_access)]

router = APIRouter(prefix="/inference", tags=["inference"])


class SubmitJob(BaseModel):
    slide_id: str = Field(min_length=1, max_length=200)
    model: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:-]+$")


@router.post("/jobs", status_code=status.HTTP_202_ACCEPTED)
def submit_job(body: SubmitJob, jobs: Jobs, access: Access) -> dict[str, Any]:
    access(body.slide_id)
    return jobs.submit(body.slide_id, body.model).to_dict()


@router.get("/jobs")
def list_jobs(jobs: Jobs, access: Access) -> list[dict[str, Any]]:
    return [job.to_dict() for job in jobs.list_jobs() if _visible(access, job)]


def _visible(access: Callable[[str], None], job: Job) -> bool:
    try:
        access(job.slide_id)
    except LookupError:  # tiling's and share's not-found errors are both LookupErrors
        return False
    return True


def _job(jobs: JobService, job_id: str, access: Callable[[str], None]) -> Job:
    job = jobs.get(job_id)
    if not _visible(access, job):
        raise JobNotFoundError(f"no job {job_id!r}")
    return job


@router.get("/jobs/{job_id}")
def get_job(job_id: str, jobs: Jobs, access: Access) -> dict[str, Any]:
    return _job(jobs, job_id, access).to_dict()


@router.post("/jobs/{job_id}/cancel")
def cancel_job(job_id: str, jobs: Jobs, access: Access) -> dict[str, Any]:
    return jobs.cancel(_job(jobs, job_id, access).id).to_dict()


def _done(jobs: JobService, job_id: str, access: Callable[[str], None]) -> Job:
    job = _job(jobs, job_id, access)
    if job.state != JobState.DONE:
        raise JobNotDoneError(f"job {job_id} is {job.state}")
    return job


@router.get("/jobs/{job_id}/results")
def job_results(job_id: str, jobs: Jobs, access: Access) -> dict[str, Any]:
    """Where the result lives in the slide's store; marked AI output pending validation."""
    job = _done(jobs, job_id, access)
    return {
        "job": job.id,
        "slide_id": job.slide_id,
        "labels": job.labels,
        "outlines": f"/inference/jobs/{job.id}/outlines" if job.outlines else None,
        "ai_generated": True,
        "validation": "pending",
    }


@router.get("/jobs/{job_id}/outlines")
def job_outlines(job_id: str, jobs: Jobs, access: Access) -> FileResponse:
    """The QuPath GeoJSON outlines (level-0 pixel coordinates)."""
    job = _done(jobs, job_id, access)
    store = jobs.resolve_slide(job.slide_id)
    return FileResponse(store / str(job.outlines), media_type="application/geo+json")
